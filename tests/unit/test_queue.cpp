// Queue order and size: FIFO, per producer and across registrations.
#include "helpers.hpp"

#include <algorithm>
#include <map>
#include <random>

using namespace ut;

TEST_CASE("queue: an empty hub takes nothing and has size 0", "[queue]") {
  HubHandle hub;
  CHECK(hub->size() == 0);
  CHECK_FALSE(hub->take());
  CHECK(hub->size() == 0);
  CHECK(hub->state() == Hub::State::running);
  CHECK(hub->port() == 0);
}

TEST_CASE("queue: FIFO over many items, size exact after every deliver and take",
          "[queue]") {
  const int N = 1000;
  std::vector<Rec> recs(N);
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  for (int i = 0; i < N; ++i) {
    recs[std::size_t(i)].seq = i;
    REQUIRE(Hub::deliver(u, rec_decode, nullptr, &recs[std::size_t(i)]) == DSS_SUCCESS);
    REQUIRE(hub->size() == std::size_t(i + 1));
  }
  for (int i = 0; i < N; ++i) {
    Taken it = must_take(hub.get());
    REQUIRE(it.data == &recs[std::size_t(i)]);
    REQUIRE(it.utilid() == u);
    REQUIRE(it.decode == rec_decode);
    REQUIRE(it.blk == nullptr);  // fire and forget
    REQUIRE(hub->size() == std::size_t(N - 1 - i));
    REQUIRE(decode(hub.get(), it) == 0);
    CHECK(hub->settle(it, 0) == 0);
  }
  CHECK_FALSE(hub->take());
  CHECK(hub->size() == 0);
  for (auto& r : recs) {
    CHECK(r.decoded == 1);
    CHECK(r.calls() == 1);
    CHECK(r.utilid == u);
    CHECK(r.bad_args == 0);
  }
}

TEST_CASE("queue: FIFO and size exact through interleaved delivers and takes "
          "across blocks", "[queue]") {
  // Runs of deliveries and takes of random lengths (up to about two blocks
  // each), so that the consumer's reservation ends mid-block, at a block's
  // end and at the queue's end, with items appended behind it meanwhile.
  const int N = 20000;
  const unsigned run = 2 * Hub::kEntries + 3;
  std::vector<Rec> recs(N);
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::mt19937 rng(20240611);
  int in = 0, out = 0, bad = 0;
  while (out < N) {
    int k = std::min(N - in, int(rng() % run));
    for (int i = 0; i < k; ++i, ++in) {
      if (Hub::deliver(u, rec_decode, nullptr, &recs[std::size_t(in)]) != DSS_SUCCESS ||
          hub->size() != std::size_t(in + 1 - out))
        ++bad;
    }
    int j = int(rng() % run);
    for (int i = 0; i < j; ++i) {
      Taken it = hub->take();
      if (out == in) {  // empty
        if (it) ++bad;
        break;
      }
      if (!it || it.data != &recs[std::size_t(out)]) {
        ++bad;
        break;
      }
      hub->finish(it);
      ++out;
      if (hub->size() != std::size_t(in - out)) ++bad;
    }
    REQUIRE(bad == 0);
  }
  CHECK(in == N);
  CHECK_FALSE(hub->take());
  CHECK(hub->size() == 0);
  int calls = 0;
  for (auto& r : recs) calls += r.calls();
  CHECK(calls == 0);  // finish() alone calls nothing
}

TEST_CASE("queue: items of several registrations share one FIFO", "[queue]") {
  const int N = 60;
  std::vector<Rec> recs(N);
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0));
  void* b = must_reg(hub.get(), libid(1));
  REQUIRE(a != b);
  for (int i = 0; i < N; ++i) {
    void* u = (i % 3 == 0) ? b : a;
    REQUIRE(Hub::deliver(u, rec_decode, nullptr, &recs[std::size_t(i)]) == DSS_SUCCESS);
  }
  REQUIRE(hub->size() == std::size_t(N));
  for (int i = 0; i < N; ++i) {
    Taken it = must_take(hub.get());
    REQUIRE(it.data == &recs[std::size_t(i)]);
    REQUIRE(it.utilid() == ((i % 3 == 0) ? b : a));
    hub->finish(it);
  }
  CHECK(hub->size() == 0);
  // finish() alone ends a fire-and-forget item without calling anything.
  for (auto& r : recs) CHECK(r.calls() == 0);
}

TEST_CASE("queue: several concurrent producers, each producer's order kept",
          "[queue]") {
  const int P = 4, M = 500;
  std::vector<std::vector<Rec>> recs(P);
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  for (int p = 0; p < P; ++p) {
    recs[std::size_t(p)] = std::vector<Rec>(M);
    for (int i = 0; i < M; ++i) {
      recs[std::size_t(p)][std::size_t(i)].producer = p;
      recs[std::size_t(p)][std::size_t(i)].seq = i;
    }
  }
  std::atomic<bool> go{false};
  std::vector<std::atomic<int>> failures(P);
  std::vector<std::thread> producers;
  for (int p = 0; p < P; ++p) {
    producers.emplace_back([&, p] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < M; ++i)
        if (Hub::deliver(u, rec_decode, nullptr,
                         &recs[std::size_t(p)][std::size_t(i)]) != DSS_SUCCESS)
          ++failures[std::size_t(p)];
    });
  }
  go = true;
  for (auto& t : producers) t.join();
  for (auto& f : failures) REQUIRE(f == 0);
  REQUIRE(hub->size() == std::size_t(P * M));

  std::vector<int> next(P, 0);
  std::size_t left = std::size_t(P * M);
  while (Taken it = hub->take()) {
    --left;
    REQUIRE(hub->size() == left);
    Rec* r = static_cast<Rec*>(it.data);
    REQUIRE(r->seq == next[std::size_t(r->producer)]);
    ++next[std::size_t(r->producer)];
    hub->finish(it);
  }
  CHECK(left == 0);
  for (int p = 0; p < P; ++p) CHECK(next[std::size_t(p)] == M);
}

TEST_CASE("queue: a blocking item keeps its place in the FIFO", "[queue]") {
  Rec first, blocking, last;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &first) == DSS_SUCCESS);
  Producer prod(u, rec_decode, rec_ret, &blocking);
  REQUIRE(wait_until([&] { return hub->size() == 2; }));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &last) == DSS_SUCCESS);
  REQUIRE(hub->size() == 3);

  Taken it = must_take(hub.get());
  CHECK(it.data == &first);
  CHECK(it.blk == nullptr);
  hub->finish(it);
  it = must_take(hub.get());
  CHECK(it.data == &blocking);
  REQUIRE(it.blk != nullptr);
  CHECK(it.blk->ret == rec_ret);
  CHECK(hub->size() == 1);
  CHECK_FALSE(prod.done_within(kQuiet));
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  REQUIRE(prod.done_within(kHang));
  CHECK(prod.rc() == DSS_SUCCESS);
  it = must_take(hub.get());
  CHECK(it.data == &last);
  hub->finish(it);
  CHECK_FALSE(hub->take());
  CHECK(blocking.decoded == 1);
  CHECK(blocking.calls() == 1);
}

TEST_CASE("queue: maxqueued is the depth the moment an item became visible, "
          "even when the consumer takes one before the producer lets go of the lock",
          "[queue]") {
  // The consumer claims items of its reservation without the lock, so it
  // can take one while a producer still holds the lock after its push.
  // Deterministic here: the test plays both, in that interleaving.
  // (fuzz_dss /tmp/crash1: queuesize() 5, then stats().maxqueued 4.)
  dss::Queue q;
  int a = 0, b = 0;
  auto no_mark = [](std::uint64_t) {};
  {
    std::lock_guard<std::mutex> lock(q.mu);
    REQUIRE(q.push_locked(1, rec_decode, &a));
    q.depth_after_push_locked(false);
    dss::Queue::Block* freed = nullptr;
    REQUIRE(q.reserve_locked(&freed));  // the consumer's reservation: a
    dss::Queue::free_blocks(freed);
  }
  std::lock_guard<std::mutex> lock(q.mu);  // a producer's critical section
  REQUIRE(q.push_locked(1, rec_decode, &b));
  CHECK(q.size() == 2);  // queuesize() can return 2 from here on
  bool ended = false;
  dss::Taken t = q.claim(no_mark, &ended);  // the consumer, meanwhile: a
  REQUIRE(t);
  CHECK(t.data == &a);
  q.depth_after_push_locked(false);  // the producer, still under the lock
  CHECK(q.size() == 1);
  CHECK(q.maxqueued_locked() == 2);
}
