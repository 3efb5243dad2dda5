// timer_heap.cpp -- see timer_heap.hpp. A binary heap in an array: the
// children of slot i are 2i+1 and 2i+2.
#include "timer_heap.hpp"

namespace dss {

void TimerHeap::set(TimerNode* n, Clock::time_point deadline) {
  if (!n->queued()) {
    nodes_.push_back(n);  // may throw: n is untouched then
    n->deadline = deadline;
    place(n, nodes_.size() - 1);
    up(n->index);
    return;
  }
  bool earlier = deadline < n->deadline;
  n->deadline = deadline;
  if (earlier) up(n->index);
  else down(n->index);
}

// The last node fills the hole, then finds its level: up when it is
// earlier than the hole's parent, down otherwise.
void TimerHeap::remove(TimerNode* n) {
  if (!n->queued()) return;
  std::size_t i = n->index;
  TimerNode* last = nodes_.back();
  nodes_.pop_back();
  n->index = TimerNode::kOut;
  if (last == n) return;
  place(last, i);
  if (i > 0 && last->deadline < nodes_[(i - 1) / 2]->deadline) up(i);
  else down(i);
}

void TimerHeap::place(TimerNode* n, std::size_t i) {
  nodes_[i] = n;
  n->index = i;
}

void TimerHeap::up(std::size_t i) {
  TimerNode* n = nodes_[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 2;
    if (!(n->deadline < nodes_[parent]->deadline)) break;
    place(nodes_[parent], i);
    i = parent;
  }
  place(n, i);
}

void TimerHeap::down(std::size_t i) {
  TimerNode* n = nodes_[i];
  std::size_t size = nodes_.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && nodes_[child + 1]->deadline < nodes_[child]->deadline) ++child;
    if (!(nodes_[child]->deadline < n->deadline)) break;
    place(nodes_[child], i);
    i = child;
  }
  place(n, i);
}

}  // namespace dss
