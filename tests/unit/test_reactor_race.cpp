// test_reactor_race.cpp -- the reactor (src/core/reactor.*) under races:
// disarm() racing the fire from many threads (once it returned, no wake
// call of the entry is under way or to come: it is freed at once, so ASan
// sees a late touch and TSan an unordered one), destruction with armed
// entries and wake calls under way, and the real Pool: a task that parks
// and re-arms itself N times runs exactly N+1 times.
#include "reactor_helpers.hpp"

#include <random>

using namespace std::chrono_literals;
using namespace rt;
using dss::Pool;
using ut::kHang;

namespace {

// A wake call that takes a while, touching its entry's owner throughout:
// `inside` is 1 while it runs.
struct Racer : Runnable {
  Reactor::Entry entry{this};
  std::atomic<int> inside{0};
  std::atomic<int> fires{0};
  unsigned spin = 0;
  After run() override { return After::park; }
};

void racer_wake(void* ctx, Runnable* r) {
  auto* x = static_cast<Racer*>(r);
  x->inside.store(1);
  for (unsigned i = 0; i < x->spin; ++i) x->fires.load();
  x->fires.fetch_add(1);
  x->inside.store(0);
  static_cast<std::atomic<long>*>(ctx)->fetch_add(1);
}

// One racing thread: arm (maybe with an fd that is always readable), let
// the fire race or not, disarm, check, free.
void race(Reactor& re, int fd, unsigned seed, int rounds, std::atomic<int>* bad) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> us(0, 100);
  for (int i = 0; i < rounds; ++i) {
    auto* x = new Racer;
    x->spin = unsigned(us(rng)) * 20;
    bool with_fd = i % 4 == 0;
    if (re.arm(&x->entry, Clock::now() + std::chrono::microseconds(us(rng)),
               with_fd ? fd : -1) != 0)
      bad->fetch_add(1);
    for (int s = us(rng) * 10; s > 0; --s) x->inside.load();
    re.disarm(&x->entry);
    if (x->inside.load() != 0 || x->fires.load() > 1) bad->fetch_add(1);
    delete x;
  }
}

// Every Sleeper's finish, counted for the test's thread.
struct Finishes {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
};

// A session's life on the Pool: each run but the last arms the reactor and
// parks -- due at once (the fire comes while it still runs), in 1 ms, or
// by its own fd made readable before the arm -- and the last is done.
struct Sleeper : Runnable {
  Reactor* re = nullptr;
  Finishes* fin = nullptr;
  Reactor::Entry entry{this};
  Pipe pipe;
  int n = 0;
  std::atomic<int> runs{0};
  std::atomic<int> bad{0};
  After run() override {
    int k = runs.fetch_add(1) + 1;
    pipe.drain();
    if (k > n) {
      re->disarm(&entry);
      return After::done;
    }
    int rc;
    if (k % 3 == 0) rc = re->arm(&entry, Clock::now(), -1);
    else if (k % 3 == 1) rc = re->arm(&entry, Clock::now() + 1ms, pipe.r);
    else {
      if (::write(pipe.w, "x", 1) != 1) bad.fetch_add(1);
      rc = re->arm(&entry, Clock::time_point::max(), pipe.r);
    }
    if (rc != 0) bad.fetch_add(1);
    return After::park;
  }
  void finished() override {
    std::lock_guard<std::mutex> lock(fin->mu);
    ++fin->n;
    fin->cv.notify_all();
  }
};

}  // namespace

TEST_CASE("reactor: disarm racing the fire, from many threads", "[reactor]") {
  std::atomic<long> calls{0};
  std::atomic<int> bad{0};
  Reactor re(racer_wake, &calls);
  constexpr int kThreads = 8, kRounds = 3000;
  std::vector<std::unique_ptr<Pipe>> pipes;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    pipes.emplace_back(new Pipe);
    pipes.back()->put();  // always readable
  }
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back(race, std::ref(re), pipes[std::size_t(t)]->r, unsigned(t), kRounds, &bad);
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(calls.load() <= long(kThreads) * kRounds);
  CHECK(re.timers() == 0);
}

TEST_CASE("reactor: destroyed with armed entries and wake calls under way", "[reactor]") {
  std::atomic<long> calls{0};
  std::vector<std::unique_ptr<Racer>> xs;
  std::vector<std::unique_ptr<Pipe>> pipes;
  auto t0 = Clock::now();
  {
    Reactor re(racer_wake, &calls);
    for (int i = 0; i < 2000; ++i) {
      xs.emplace_back(new Racer);
      xs.back()->spin = 2000;
      int fd = -1;
      if (i % 40 == 0) {
        pipes.emplace_back(new Pipe);
        pipes.back()->put();
        fd = pipes.back()->r;
      }
      auto when = i % 2 ? Clock::now() + 60s : Clock::now();
      REQUIRE(re.arm(&xs.back()->entry, when, fd) == 0);
    }
  }  // joined here, whatever was firing
  CHECK(Clock::now() - t0 < 10s);
  int inside = 0, twice = 0;
  for (auto& x : xs) {
    inside += x->inside.load();
    twice += x->fires.load() > 1;
  }
  CHECK(inside == 0);
  CHECK(twice == 0);
  CHECK(calls.load() <= 1000 + 50);
  Reactor never_started(racer_wake, &calls);
}

TEST_CASE("reactor: with the Pool, a task that re-arms itself N times runs N+1 times",
          "[reactor]") {
  constexpr int kTasks = 200, kN = 30;
  Finishes fin;
  Pool pool(2, 4);
  Reactor re(&pool);  // destroyed first: the pool outlives it
  std::vector<std::unique_ptr<Sleeper>> ss;
  for (int i = 0; i < kTasks; ++i) {
    ss.emplace_back(new Sleeper);
    ss.back()->re = &re;
    ss.back()->fin = &fin;
    ss.back()->n = kN;
  }
  for (auto& s : ss) REQUIRE(pool.wake(s.get()));
  {
    std::unique_lock<std::mutex> lock(fin.mu);
    REQUIRE(fin.cv.wait_for(lock, kHang, [&] { return fin.n == kTasks; }));
  }
  int exact = 0, bad = 0;
  for (auto& s : ss) {
    exact += s->runs.load() == kN + 1;
    bad += s->bad.load();
  }
  CHECK(exact == kTasks);
  CHECK(bad == 0);
  CHECK(re.timers() == 0);
}
