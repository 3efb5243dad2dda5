// signal.cpp -- see Signal in item.hpp: a futex on Linux; elsewhere the
// producer polls its word (a short sleep at a time).
#include "item.hpp"

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <thread>

namespace dss {

void Signal::bump() {
  w_.fetch_add(1, std::memory_order_release);
  wake();
}

void Signal::end() {
  w_.fetch_or(kEnded, std::memory_order_release);
  wake();  // the record may be gone already: only its address is used
}

#ifdef __linux__

void Signal::wake() {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w_), FUTEX_WAKE_PRIVATE, 1,
            nullptr, nullptr, 0);
}

bool Signal::wait(std::uint32_t v, bool timed, Clock::time_point deadline) const {
  // An absolute deadline on CLOCK_MONOTONIC, steady_clock's clock.
  timespec ts{};
  if (timed) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  deadline.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = time_t(ns / 1000000000);
    ts.tv_nsec = long(ns % 1000000000);
  }
  auto* addr = const_cast<std::uint32_t*>(reinterpret_cast<const std::uint32_t*>(&w_));
  while (w_.load(std::memory_order_acquire) == v) {
    long r = ::syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, v,
                       timed ? &ts : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
    if (r == 0 || errno == EINTR || errno == EAGAIN) continue;
    if (errno == ETIMEDOUT) return w_.load(std::memory_order_acquire) != v;
    // No futex here (a sandbox): poll, a short sleep at a time.
    if (timed && Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

#else

void Signal::wake() {}

bool Signal::wait(std::uint32_t v, bool timed, Clock::time_point deadline) const {
  while (w_.load(std::memory_order_acquire) == v) {
    if (timed && Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

#endif

}  // namespace dss
