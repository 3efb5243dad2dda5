// timer_heap.hpp -- an intrusive min-heap of deadlines: the earliest on
// top, any node removed or moved in O(log n), no allocation but the array's
// own growth (amortised: a heap that once held n nodes holds n again for
// free).
//
// A node knows its place in the array, so the owner of a node can remove it
// without a search. Not thread-safe: the reactor holds its lock around it.
#ifndef DSS_CORE_TIMER_HEAP_HPP
#define DSS_CORE_TIMER_HEAP_HPP

#include "clock.hpp"

#include <cstddef>
#include <vector>

namespace dss {

struct TimerNode {
  static constexpr std::size_t kOut = static_cast<std::size_t>(-1);
  Clock::time_point deadline{};
  std::size_t index = kOut;  // the node's place in the heap, or kOut
  bool queued() const { return index != kOut; }
};

class TimerHeap {
 public:
  bool empty() const { return nodes_.empty(); }
  std::size_t size() const { return nodes_.size(); }
  // The node with the earliest deadline; the heap must not be empty.
  TimerNode* top() const { return nodes_.front(); }

  // Queues n at `deadline`, or moves it there when queued already. Throws
  // std::bad_alloc (nothing changed then) only when a new node makes the
  // array grow.
  void set(TimerNode* n, Clock::time_point deadline);
  // Takes n out; nothing when it is not queued.
  void remove(TimerNode* n);

 private:
  void place(TimerNode* n, std::size_t i);
  void up(std::size_t i);
  void down(std::size_t i);

  std::vector<TimerNode*> nodes_;
};

}  // namespace dss

#endif  // DSS_CORE_TIMER_HEAP_HPP
