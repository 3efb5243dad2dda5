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

#ifdef __linux__

// The record may be gone already: only its address is used.
void Signal::Wake::send() const {
  if (!addr_) return;
  ::syscall(SYS_futex, const_cast<void*>(addr_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

bool Signal::wait(std::uint32_t v, bool timed, Clock::time_point deadline) {
  // An absolute deadline on CLOCK_MONOTONIC, steady_clock's clock.
  timespec ts{};
  if (timed) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  deadline.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = time_t(ns / 1000000000);
    ts.tv_nsec = long(ns % 1000000000);
  }
  auto* addr = reinterpret_cast<std::uint32_t*>(&w_);
  for (;;) {
    std::uint32_t cur = w_.load(std::memory_order_acquire);
    if ((cur & ~kSleeping) != v) break;
    // Announced before the sleep: a change made after this sends a
    // wake-up, one made before it fails the exchange or the futex call.
    if (!(cur & kSleeping) &&
        !w_.compare_exchange_weak(cur, cur | kSleeping, std::memory_order_acquire))
      continue;
    cur |= kSleeping;
    long r = ::syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, cur,
                       timed ? &ts : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
    if (r == 0 || errno == EINTR || errno == EAGAIN) continue;
    if (errno == ETIMEDOUT) return load() != v;
    // No futex here (a sandbox): poll, a short sleep at a time.
    if (timed && Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

#else

void Signal::Wake::send() const {}

bool Signal::wait(std::uint32_t v, bool timed, Clock::time_point deadline) {
  while (load() == v) {
    if (timed && Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

#endif

}  // namespace dss
