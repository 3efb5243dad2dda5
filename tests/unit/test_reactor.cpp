// test_reactor.cpp -- timers and fd readiness for parked sessions
// (src/core/reactor.*): an arm fires exactly once, never before its
// deadline, at the first of its deadline and its fd; re-arming replaces,
// disarming forgets. Races, teardown and the Pool: test_reactor_race.cpp.
//
// The wake function counts and signals; the tests wait on that with
// bounded waits (kHang), and check "no more fires" over a quiet window.
#include "reactor_helpers.hpp"

#include <random>

#ifdef __linux__
#include <sys/epoll.h>
#endif

using namespace std::chrono_literals;
using namespace rt;
using ut::kHang;
using ut::kQuiet;

TEST_CASE("reactor: a timer fires once, not before its deadline", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  REQUIRE(arm_in(re, rec, 30ms) == 0);
  CHECK(re.timers() == 1);
  REQUIRE(f.wait_total(1));
  CHECK(Clock::now() >= rec.deadline);
  CHECK_FALSE(rec.early.load());
  CHECK_FALSE(f.wait_total(2, kQuiet));
  CHECK(rec.fires.load() == 1);
  CHECK(re.timers() == 0);
}

TEST_CASE("reactor: a deadline already past fires at once; no deadline never fires",
          "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec late, never;
  REQUIRE(re.arm(&never.entry, kNever, -1) == 0);
  REQUIRE(arm_in(re, late, -1s) == 0);
  REQUIRE(f.wait_total(1));
  CHECK_FALSE(f.wait_total(2, kQuiet));
  CHECK(late.fires.load() == 1);
  CHECK(never.fires.load() == 0);
  re.disarm(&never.entry);
}

TEST_CASE("reactor: re-arming replaces the previous arm", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  SECTION("an earlier deadline interrupts the sleep towards a later one") {
    REQUIRE(arm_in(re, rec, 60s) == 0);
    // Let the thread go to sleep towards 60 s (not needed for correctness).
    std::this_thread::sleep_for(10ms);
    auto t0 = Clock::now();
    REQUIRE(arm_in(re, rec, 20ms) == 0);
    REQUIRE(f.wait_total(1));
    CHECK(Clock::now() - t0 < 10s);
  }
  SECTION("a later deadline postpones the fire") {
    REQUIRE(arm_in(re, rec, 500ms) == 0);
    REQUIRE(arm_in(re, rec, 700ms) == 0);
    REQUIRE(f.wait_total(1));
    CHECK_FALSE(rec.early.load());  // not at 500 ms
  }
  SECTION("no deadline nor fd: armed, never fires") {
    REQUIRE(arm_in(re, rec, 20ms) == 0);
    REQUIRE(re.arm(&rec.entry, kNever, -1) == 0);
    CHECK(re.timers() == 0);
  }
  CHECK_FALSE(f.wait_total(2, 20ms + kQuiet));
  CHECK(rec.fires.load() <= 1);
  re.disarm(&rec.entry);
}

TEST_CASE("reactor: disarm prevents the fire, by timer or by fd", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  Pipe p;
  REQUIRE(arm_in(re, rec, 20ms, p.r) == 0);
  re.disarm(&rec.entry);
  CHECK(re.timers() == 0);
  p.put();
  CHECK_FALSE(f.wait_total(1, 20ms + kQuiet));
  // Armed again afterwards, it works as new.
  REQUIRE(arm_in(re, rec, 60s, p.r) == 0);
  REQUIRE(f.wait_total(1));
  CHECK(rec.fires.load() == 1);
  re.disarm(&rec.entry);
}

TEST_CASE("reactor: a readable fd fires once a arm, level by level", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  Pipe p;
  REQUIRE(re.arm(&rec.entry, kNever, p.r) == 0);
  CHECK_FALSE(f.wait_total(1, kQuiet));
  p.put();
  REQUIRE(f.wait_total(1));
  CHECK_FALSE(f.wait_total(2, kQuiet));  // one-shot: still readable, not again
  // Re-armed while still readable: fires again (the owner did not drain).
  REQUIRE(re.arm(&rec.entry, kNever, p.r) == 0);
  REQUIRE(f.wait_total(2));
  // Drained, then re-armed: quiet until written again.
  p.drain();
  REQUIRE(re.arm(&rec.entry, kNever, p.r) == 0);
  CHECK_FALSE(f.wait_total(3, kQuiet));
  p.put();
  REQUIRE(f.wait_total(3));
  // Another fd instead: the old one no longer counts.
  Pipe q;
  p.drain();
  REQUIRE(re.arm(&rec.entry, kNever, q.r) == 0);
  p.put();
  CHECK_FALSE(f.wait_total(4, kQuiet));
  q.put();
  REQUIRE(f.wait_total(4));
  re.disarm(&rec.entry);
  CHECK(rec.fires.load() == 4);
}

TEST_CASE("reactor: a bad fd is refused, the entry left unarmed", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec, other;
  Pipe p;
  REQUIRE(re.arm(&rec.entry, kNever, -1) == 0);  // its own fds made first
  int closed;
  {
    Pipe gone;
    closed = gone.r;
  }
  CHECK(arm_in(re, rec, 10ms, closed) == EBADF);
  CHECK(re.timers() == 0);
  REQUIRE(re.arm(&rec.entry, kNever, p.r) == 0);
  CHECK(re.arm(&other.entry, kNever, p.r) == EEXIST);  // one fd, one entry
  p.put();
  REQUIRE(f.wait_total(1));
  CHECK(rec.fires.load() == 1);
  CHECK(other.fires.load() == 0);
  re.disarm(&rec.entry);
  re.disarm(&other.entry);
}

TEST_CASE("reactor: the first of timer and fd fires, exactly once", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  Pipe p;
  SECTION("fd first") {
    REQUIRE(arm_in(re, rec, 200ms, p.r) == 0);
    p.put();
    REQUIRE(f.wait_total(1));
    CHECK(rec.early.load());  // by the fd, before the deadline
    CHECK(re.timers() == 0);
    CHECK_FALSE(f.wait_total(2, 200ms + kQuiet));
  }
  SECTION("timer first") {
    REQUIRE(arm_in(re, rec, 20ms, p.r) == 0);
    REQUIRE(f.wait_total(1));
    CHECK_FALSE(rec.early.load());
    p.put();  // the fd's interest is of an arm that is over
    CHECK_FALSE(f.wait_total(2, kQuiet));
  }
  CHECK(rec.fires.load() == 1);
  re.disarm(&rec.entry);
}

TEST_CASE("reactor: 10 000 entries with random deadlines each fire exactly once",
          "[reactor]") {
  constexpr int kN = 10000, kFds = 200;
  Fires f;
  Reactor re(on_wake, &f);
  std::vector<std::unique_ptr<Rec>> recs;
  std::vector<std::unique_ptr<Pipe>> pipes;
  std::mt19937 rng(15);
  std::uniform_int_distribution<int> ms(0, 300);
  for (int i = 0; i < kN; ++i) {
    recs.emplace_back(new Rec);
    int fd = -1;
    if (i < kFds) {  // some with an fd too, most of them written first
      pipes.emplace_back(new Pipe);
      fd = pipes.back()->r;
    }
    REQUIRE(arm_in(re, *recs.back(), std::chrono::milliseconds(ms(rng)), fd) == 0);
  }
  for (int i = 0; i < kFds; i += 2) pipes[std::size_t(i)]->put();
  REQUIRE(f.wait_total(kN));
  CHECK_FALSE(f.wait_total(kN + 1, kQuiet));
  int once = 0, early = 0;
  for (int i = 0; i < kN; ++i) {
    once += recs[std::size_t(i)]->fires.load() == 1;
    early += i >= kFds && recs[std::size_t(i)]->early.load();
  }
  CHECK(once == kN);
  CHECK(early == 0);
  CHECK(re.timers() == 0);
  for (auto& r : recs) re.disarm(&r->entry);
}

TEST_CASE("reactor: a wake may arm again and disarm, its own entry included",
          "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  SECTION("re-armed from its wake, N times: N+1 fires") {
    Rec rec;
    std::atomic<int> failed{0};  // no assertions off the test's thread
    rec.on_fire = [&] {
      if (rec.fires.load() <= 50 && re.arm(&rec.entry, Clock::now(), -1) != 0) ++failed;
    };
    REQUIRE(arm_in(re, rec, 0ms) == 0);
    REQUIRE(f.wait_total(51));
    CHECK_FALSE(f.wait_total(52, kQuiet));
    CHECK(failed.load() == 0);
    re.disarm(&rec.entry);
  }
  SECTION("disarmed and freed from its own wake") {
    auto* rec = new Rec;
    std::atomic<bool> freed{false};
    rec->on_fire = [&] {
      re.disarm(&rec->entry);
      delete rec;  // the wake touches it no more
      freed = true;
    };
    Pipe p;
    REQUIRE(arm_in(re, *rec, 10ms, p.r) == 0);
    REQUIRE(f.wait_total(1));
    CHECK(freed.load());
  }
}

TEST_CASE("reactor: a fire queued behind a wake call is dropped by re-arm or disarm; "
          "disarm waits out a call under way", "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec a, b;
  // The first wake call blocks until released; it says whose it is.
  std::mutex mu;
  std::condition_variable cv;
  Rec* first = nullptr;
  bool open = false;
  auto gate = [&](Rec* self) {
    std::unique_lock<std::mutex> lock(mu);
    if (first) return;
    first = self;
    cv.notify_all();
    cv.wait(lock, [&] { return open; });
  };
  a.on_fire = [&] { gate(&a); };
  b.on_fire = [&] { gate(&b); };
  // One deadline, well ahead: both are due in the same turn.
  auto when = Clock::now() + 50ms;
  a.deadline = b.deadline = when;
  REQUIRE(re.arm(&a.entry, when, -1) == 0);
  REQUIRE(re.arm(&b.entry, when, -1) == 0);
  Rec* calling;
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, kHang, [&] { return first != nullptr; }));
    calling = first;
  }
  Rec* queued = calling == &a ? &b : &a;
  bool rearmed = false;
  SECTION("re-armed: the queued fire is the old arm's") {
    REQUIRE(arm_in(re, *queued, 150ms) == 0);
    rearmed = true;
  }
  SECTION("disarmed: never fires") {
    re.disarm(&queued->entry);
  }
  // A disarm of the one calling waits for the call to end.
  std::atomic<bool> returned{false};
  std::thread t([&] {
    re.disarm(&calling->entry);
    returned = true;
  });
  std::this_thread::sleep_for(kQuiet);  // a negative check: not yet
  CHECK_FALSE(returned.load());
  {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
  t.join();
  CHECK(calling->fires.load() == 1);
  if (rearmed) {
    REQUIRE(f.wait_total(2));
    CHECK_FALSE(queued->early.load());  // not at the old deadline
  }
  CHECK_FALSE(f.wait_total(3, kQuiet));
  CHECK(queued->fires.load() == (rearmed ? 1 : 0));
  re.disarm(&queued->entry);
}

#ifdef __linux__
TEST_CASE("reactor: a session's own epoll fd, readable when one of its fds is",
          "[reactor]") {
  Fires f;
  Reactor re(on_wake, &f);
  Rec rec;
  Pipe p;
  int inner = ::epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(inner >= 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  REQUIRE(::epoll_ctl(inner, EPOLL_CTL_ADD, p.r, &ev) == 0);
  REQUIRE(re.arm(&rec.entry, kNever, inner) == 0);
  CHECK_FALSE(f.wait_total(1, kQuiet));
  p.put();
  REQUIRE(f.wait_total(1));
  // The session drains what its poller reported, then parks again: quiet.
  p.drain();
  REQUIRE(re.arm(&rec.entry, kNever, inner) == 0);
  CHECK_FALSE(f.wait_total(2, kQuiet));
  p.put();
  REQUIRE(f.wait_total(2));
  re.disarm(&rec.entry);  // before closing the fd
  ::close(inner);
}
#endif
