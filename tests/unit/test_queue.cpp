// Queue order and size: FIFO, per producer and across registrations.
#include "helpers.hpp"

#include <map>

using namespace ut;

TEST_CASE("queue: an empty hub pops nothing and has size 0", "[queue]") {
  HubHandle hub;
  CHECK(hub->size() == 0);
  CHECK(hub->pop() == nullptr);
  CHECK(hub->size() == 0);
  CHECK(hub->state() == Hub::State::running);
  CHECK(hub->port() == 0);
}

TEST_CASE("queue: FIFO over many items, size exact after every deliver and pop",
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
    Item* it = must_pop(hub.get());
    REQUIRE(it->data == &recs[std::size_t(i)]);
    REQUIRE(it->utilid() == u);
    REQUIRE(it->decode == rec_decode);
    REQUIRE(it->ret == nullptr);
    REQUIRE(it->waiter == nullptr);
    REQUIRE(hub->size() == std::size_t(N - 1 - i));
    REQUIRE(decode(it) == 0);
    hub->finish(it);
  }
  CHECK(hub->pop() == nullptr);
  CHECK(hub->size() == 0);
  for (auto& r : recs) {
    CHECK(r.decoded == 1);
    CHECK(r.calls() == 1);
    CHECK(r.utilid == u);
    CHECK(r.bad_args == 0);
  }
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
    Item* it = must_pop(hub.get());
    REQUIRE(it->data == &recs[std::size_t(i)]);
    REQUIRE(it->utilid() == ((i % 3 == 0) ? b : a));
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
  while (Item* it = hub->pop()) {
    --left;
    REQUIRE(hub->size() == left);
    Rec* r = static_cast<Rec*>(it->data);
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

  Item* it = must_pop(hub.get());
  CHECK(it->data == &first);
  hub->finish(it);
  it = must_pop(hub.get());
  CHECK(it->data == &blocking);
  CHECK(it->ret == rec_ret);
  CHECK(it->waiter != nullptr);
  CHECK(hub->size() == 1);
  CHECK_FALSE(prod.done_within(kQuiet));
  REQUIRE(decode(it) == 0);
  hub->finish(it);
  REQUIRE(prod.done_within(kHang));
  CHECK(prod.rc() == DSS_SUCCESS);
  it = must_pop(hub.get());
  CHECK(it->data == &last);
  hub->finish(it);
  CHECK(hub->pop() == nullptr);
  CHECK(blocking.decoded == 1);
  CHECK(blocking.calls() == 1);
}
