// reactor_helpers.hpp -- what the reactor's tests share: a wake function
// that counts and signals (Fires), a parked "session" that records its
// fires (Rec), a pipe to make an fd readable.
#ifndef DSS_UNIT_REACTOR_HELPERS_HPP
#define DSS_UNIT_REACTOR_HELPERS_HPP

#include "helpers.hpp"

#include "pool.hpp"
#include "reactor.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>

namespace rt {

using ut::kHang;
using ut::kQuiet;

using dss::Clock;
using dss::Reactor;
using dss::Runnable;

constexpr Clock::time_point kNever = Clock::time_point::max();

// What the wake function saw, for every entry of a test.
struct Fires {
  std::mutex mu;
  std::condition_variable cv;
  int total = 0;
  bool wait_total(int n, Clock::duration d = kHang) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, d, [&] { return total >= n; });
  }
  int now() {
    std::lock_guard<std::mutex> lock(mu);
    return total;
  }
};

// A parked "session" the reactor wakes: never run by a pool here. Records
// its fires, and whether one came before the deadline it was armed with.
struct Rec : Runnable {
  Reactor::Entry entry{this};
  Clock::time_point deadline = kNever;  // the latest arm's, set before it
  std::atomic<int> fires{0};
  std::atomic<bool> early{false};
  std::function<void()> on_fire;  // called in the wake (the reactor's thread)
  After run() override { return After::park; }
};

inline void on_wake(void* ctx, Runnable* r) {
  auto* rec = static_cast<Rec*>(r);
  if (Clock::now() < rec->deadline) rec->early = true;
  rec->fires.fetch_add(1);
  // A copy: on_fire may free rec, and its own closure with it.
  if (std::function<void()> fn = rec->on_fire) fn();
  auto* f = static_cast<Fires*>(ctx);
  std::lock_guard<std::mutex> lock(f->mu);
  ++f->total;
  f->cv.notify_all();
}

inline int arm_in(Reactor& re, Rec& rec, Clock::duration d, int fd = -1) {
  rec.deadline = Clock::now() + d;
  return re.arm(&rec.entry, rec.deadline, fd);
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    r = p[0];
    w = p[1];
    ::fcntl(r, F_SETFL, ::fcntl(r, F_GETFL) | O_NONBLOCK);
  }
  ~Pipe() {
    ::close(r);
    ::close(w);
  }
  void put() { REQUIRE(::write(w, "x", 1) == 1); }
  void drain() {
    char buf[64];
    while (::read(r, buf, sizeof buf) > 0) {
    }
  }
};

}  // namespace rt

#endif  // DSS_UNIT_REACTOR_HELPERS_HPP
