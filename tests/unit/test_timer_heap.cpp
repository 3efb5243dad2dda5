// test_timer_heap.cpp -- the reactor's deadline heap (src/core/timer_heap.*):
// random sets, moves and removes against a sorted model; the top is always
// the earliest, and each node knows its place.
#include <catch2/catch.hpp>

#include "timer_heap.hpp"

#include <random>
#include <set>
#include <utility>
#include <vector>

using dss::Clock;
using dss::TimerHeap;
using dss::TimerNode;

TEST_CASE("timer heap: set, move and remove keep the earliest on top",
          "[reactor][timer_heap]") {
  constexpr int kNodes = 500;
  std::vector<TimerNode> nodes(kNodes);
  std::set<std::pair<Clock::time_point, TimerNode*>> model;
  TimerHeap heap;
  std::mt19937 rng(15);
  std::uniform_int_distribution<int> pick(0, kNodes - 1), ms(0, 1000), op(0, 2);
  auto t0 = Clock::now();
  int wrong_top = 0, wrong_place = 0;
  for (int step = 0; step < 20000; ++step) {
    TimerNode* n = &nodes[std::size_t(pick(rng))];
    if (n->queued()) model.erase({n->deadline, n});
    if (op(rng) == 0) {
      heap.remove(n);
      CHECK_FALSE(n->queued());
    } else {
      auto when = t0 + std::chrono::milliseconds(ms(rng));
      heap.set(n, when);
      model.insert({when, n});
    }
    REQUIRE(heap.size() == model.size());
    if (!model.empty() && heap.top()->deadline != model.begin()->first) ++wrong_top;
  }
  for (auto& n : nodes)
    if (n.queued() && n.index >= heap.size()) ++wrong_place;
  CHECK(wrong_top == 0);
  CHECK(wrong_place == 0);
  // Emptied from the top, in order.
  Clock::time_point last = Clock::time_point::min();
  int out_of_order = 0;
  while (!heap.empty()) {
    TimerNode* top = heap.top();
    if (top->deadline < last) ++out_of_order;
    last = top->deadline;
    heap.remove(top);
  }
  CHECK(out_of_order == 0);
  for (auto& n : nodes) CHECK_FALSE(n.queued());
}
