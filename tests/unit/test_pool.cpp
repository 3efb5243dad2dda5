// test_pool.cpp -- the session thread pool (src/core/pool.*): every wake
// leads to a run, never two runs of one task at once, threads grow while
// tasks block them and retire when idle, close drains and joins.
#include "helpers.hpp"

#include "pool.hpp"

#include <condition_variable>
#include <deque>
#include <vector>

using namespace std::chrono_literals;
using dss::Pool;
using dss::Runnable;
using ut::kHang;

namespace {

// A gate tasks can block on (a task stuck in a blocking C call).
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int waiting = 0;
  void pass() {
    std::unique_lock<std::mutex> lock(mu);
    ++waiting;
    cv.notify_all();
    cv.wait(lock, [this] { return open; });
    --waiting;
  }
  bool wait_waiting(int n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, kHang, [&] { return waiting >= n; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
};

// Counts its runs; checks no two overlap; parks until `runs_left` is 0.
struct Task : Runnable {
  std::atomic<int> runs{0};
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> finishes{0};
  int runs_left = 1000000;  // then done
  Gate* gate = nullptr;
  std::function<void()> during;  // called inside the run
  After run() override {
    if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
    if (gate) gate->pass();
    if (during) during();
    inside.fetch_sub(1);
    runs.fetch_add(1);
    return --runs_left > 0 ? After::park : After::done;
  }
  void finished() override { finishes.fetch_add(1); }
};

// Bounded wait for a condition (a broken pool fails instead of hanging).
template <class F>
bool eventually(F f) {
  auto end = std::chrono::steady_clock::now() + kHang;
  while (!f()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

TEST_CASE("pool: a woken task runs once; wakes while queued or running are not lost",
          "[pool]") {
  Pool pool(1, 1);
  Gate gate;
  Task t;
  t.gate = &gate;
  REQUIRE(pool.wake(&t));
  REQUIRE(gate.wait_waiting(1));  // running, blocked
  REQUIRE(pool.wake(&t));         // woken while it runs
  REQUIRE(pool.wake(&t));         // again: still one more run
  t.gate = nullptr;
  gate.release();
  REQUIRE(eventually([&] { return t.runs.load() == 2; }));
  REQUIRE(pool.close());
  CHECK(t.runs.load() == 2);
  CHECK(t.overlaps.load() == 0);
  CHECK(t.finishes.load() == 0);
}

TEST_CASE("pool: a done task is finished once and never runs again", "[pool]") {
  Pool pool(1, 2);
  Task t;
  t.runs_left = 1;
  REQUIRE(pool.wake(&t));
  REQUIRE(eventually([&] { return t.finishes.load() == 1; }));
  CHECK_FALSE(pool.wake(&t));
  REQUIRE(pool.close());
  CHECK(t.runs.load() == 1);
  CHECK(t.finishes.load() == 1);
}

TEST_CASE("pool: threads grow up to max while tasks block them, then retire to min",
          "[pool]") {
  Pool pool(1, 3);
  pool.set_idle_retire(20ms);
  Gate gate;
  std::vector<std::unique_ptr<Task>> ts;
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back(new Task);
    ts.back()->gate = &gate;
    REQUIRE(pool.wake(ts.back().get()));
  }
  REQUIRE(gate.wait_waiting(3));
  Pool::Counts c = pool.counts();
  CHECK(c.threads == 3);
  CHECK(c.busy == 3);
  CHECK(c.queued == 1);  // the fourth waits for a thread
  gate.release();
  REQUIRE(eventually([&] {
    int n = 0;
    for (auto& t : ts) n += t->runs.load();
    return n == 4;
  }));
  REQUIRE(eventually([&] { return pool.counts().threads == 1; }));
  CHECK(pool.counts().peak == 3);
  REQUIRE(pool.close());
  CHECK(pool.counts().threads == 0);
}

TEST_CASE("pool: limits are clamped; raising min starts threads", "[pool]") {
  Pool pool(0, 0);
  unsigned mn, mx;
  pool.limits(&mn, &mx);
  CHECK(mn == 1);
  CHECK(mx == 1);
  pool.set_limits(3, 2);
  pool.limits(&mn, &mx);
  CHECK(mn == 3);
  CHECK(mx == 3);
  CHECK(pool.counts().threads == 3);
}

TEST_CASE("pool: close runs what is queued and what is woken while running, then joins",
          "[pool]") {
  Task a, b;
  Pool* pp = nullptr;
  std::atomic<bool> refused{false};
  a.during = [&] {
    if (a.runs.load() == 0) pp->wake(&a);  // woken while it runs
  };
  {
    Pool pool(1, 1);
    pp = &pool;
    Gate gate;
    Task blocker;
    blocker.gate = &gate;
    blocker.runs_left = 1;
    REQUIRE(pool.wake(&blocker));
    REQUIRE(gate.wait_waiting(1));
    REQUIRE(pool.wake(&a));
    REQUIRE(pool.wake(&b));
    std::thread closer([&] { pool.close(); });
    std::deque<Task> probes;  // each woken once; those queued run at close
    REQUIRE(eventually([&] {
      probes.emplace_back();
      bool ok = pool.wake(&probes.back());
      refused = !ok;
      return !ok;  // closing: new wakes are refused
    }));
    gate.release();
    closer.join();
    CHECK(pool.counts().threads == 0);
  }
  CHECK(refused.load());
  CHECK(a.runs.load() == 2);
  CHECK(b.runs.load() == 1);
}

TEST_CASE("pool: close from one of its own threads is refused", "[pool]") {
  Pool pool(1, 1);
  Task t;
  std::atomic<int> r{-1};
  t.runs_left = 1;
  t.during = [&] { r = pool.close() ? 1 : 0; };
  REQUIRE(pool.wake(&t));
  REQUIRE(eventually([&] { return t.finishes.load() == 1; }));
  CHECK(r.load() == 0);
  CHECK(Pool::current() == nullptr);
  REQUIRE(pool.close());
}

TEST_CASE("pool: many wakers, many tasks: every wake is followed by a run, none overlap",
          "[pool][stress]") {
  Pool pool(2, 4);
  const int kTasks = 64, kWakers = 4, kWakes = 5000;
  std::vector<std::unique_ptr<Task>> ts;
  for (int i = 0; i < kTasks; ++i) ts.emplace_back(new Task);
  std::vector<std::thread> wakers;
  for (int w = 0; w < kWakers; ++w)
    wakers.emplace_back([&, w] {
      unsigned x = 12345u + unsigned(w);
      for (int i = 0; i < kWakes; ++i) {
        x = x * 1103515245u + 12345u;
        pool.wake(ts[(x >> 8) % kTasks].get());
      }
    });
  for (auto& th : wakers) th.join();
  // After the last wake every task that was woken runs at least once more;
  // wake each once now and wait for that run: none may be lost.
  std::vector<int> before;
  for (auto& t : ts) before.push_back(t->runs.load());
  for (auto& t : ts) REQUIRE(pool.wake(t.get()));
  for (int i = 0; i < kTasks; ++i)
    REQUIRE(eventually([&] { return ts[i]->runs.load() > before[i]; }));
  REQUIRE(pool.close());
  int overlaps = 0, runs = 0;
  for (auto& t : ts) {
    overlaps += t->overlaps.load();
    runs += t->runs.load();
  }
  CHECK(overlaps == 0);
  CHECK(runs >= kTasks);
  CHECK(runs <= kWakers * kWakes + kTasks);
}
