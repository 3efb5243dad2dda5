// queue.cpp -- see queue.hpp.
#include "queue.hpp"

#include <new>

namespace dss {

Queue::~Queue() { reset_locked(); }

void Queue::reset_locked() {
  free_blocks(qhead_);
  delete spare_;
  qhead_ = qtail_ = spare_ = nullptr;
  count_.store(0, std::memory_order_relaxed);
  delivered_ = maxqueued_ = 0;
  unsettled_.store(0, std::memory_order_relaxed);
  cblock_ = lim_block_ = nullptr;
  cpos_ = lim_end_ = 0;
  seen_kills_ = kills_.load(std::memory_order_relaxed);
  live_left_ = 0;
}

Queue::Block* Queue::new_block_locked() {
  Block* nb = spare_;
  if (nb) spare_ = nullptr;
  else nb = new (std::nothrow) Block;
  if (!nb) return nullptr;
  nb->next = nullptr;
  nb->end = 0;
  nb->seq = ++block_seq_;
  if (qtail_) qtail_->next = nb;
  else qhead_ = nb;
  qtail_ = nb;
  return nb;
}

void Queue::settle_locked() {
  std::size_t u = unsettled_.load(std::memory_order_relaxed);
  if (!u) return;
  add_count_locked(0 - u);
  unsettled_.store(0, std::memory_order_relaxed);
}

bool Queue::reserve_locked(Block** freed) {
  if (!cblock_) {
    cblock_ = qhead_;
    cpos_ = 0;
  } else if (cpos_ == kEntries && cblock_->next) {
    cblock_ = cblock_->next;
    cpos_ = 0;
  }
  // Blocks the consumer has passed are done with.
  while (qhead_ && qhead_ != cblock_) {
    Block* b = qhead_;
    qhead_ = b->next;
    if (!spare_) {
      spare_ = b;
    } else {
      b->next = *freed;
      *freed = b;
    }
  }
  // Passed everything: start the last block over.
  if (cblock_ && cblock_ == qtail_ && cpos_ == cblock_->end) {
    cblock_->end = 0;
    cpos_ = 0;
  }
  lim_block_ = qtail_;
  lim_end_ = qtail_ ? qtail_->end : 0;
  seen_kills_ = kills_.load(std::memory_order_relaxed);
  live_left_ = size();  // settled: every live entry is reserved
  return live_left_ > 0;
}

void Queue::free_blocks(Block* freed) {
  while (freed) {
    Block* b = freed;
    freed = b->next;
    delete b;
  }
}

bool Queue::kill(Blocking& b) {
  std::uint64_t expect = b.id | kBlockingBit;
  if (!b.entry->id.compare_exchange_strong(expect, 0)) return false;
  b.entry = nullptr;
  return true;
}

Queue::Block* Queue::find_resume_locked(const Cursor& c, std::uint32_t* at) const {
  for (Block* x = qhead_; c.block && x; x = x->next) {
    if (x == c.block && x->seq == c.seq) {
      *at = c.at;
      return x;
    }
  }
  *at = 0;
  return qhead_;
}

std::size_t Queue::kill_walk_locked(std::uint64_t id, Cursor* c, Taken* out,
                                    std::size_t room, bool* more) {
  // New entries of id cannot appear meanwhile (unregistered, or closing),
  // so a restart or a resume in a block restarted in place misses none.
  std::size_t n = 0;
  std::uint32_t i;
  *more = false;
  for (Block* b = find_resume_locked(*c, &i); b; b = b->next, i = 0) {
    for (; i < b->end; ++i) {
      Entry& e = b->e[i];
      std::uint64_t v = e.id.load(std::memory_order_relaxed);
      if (!v || (id && (v & ~kBlockingBit) != id)) continue;
      if (n == room) {
        *more = true;
        *c = Cursor{b, b->seq, i};
        return n;
      }
      // Acquire on failure: a claim by the consumer that beat us published
      // its in-flight mark first (see Hub::take).
      if (!e.id.compare_exchange_strong(v, 0, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      out[n] = taken_of(e, v);
      if (out[n].blk) out[n].blk->entry = nullptr;
      ++n;
    }
  }
  return n;
}

bool Queue::kills_locked(std::size_t killed) {
  add_count_locked(0 - killed);
  // The consumer's count of items taken is its own, read here without a
  // lock: it may be older (smaller) than the truth, which makes the queue
  // look fuller, never emptier. Empty for sure: the caller resets the
  // wake-ups. If it only looks non-empty, the consumer finds out: it stores
  // its count, then does a read-modify-write of kills_ when it leaves its
  // drain (killed_since_reserve); we do ours, then read its count. The two
  // are ordered in kills_'s modification order: either ours comes first and
  // the consumer reads the kill (and settles under the lock), or its comes
  // first and ours reads from it (acquire), and so reads its count. A
  // notice is never lost.
  kills_.fetch_add(1, std::memory_order_acq_rel);
  return size() == 0;
}

long Queue::count_locked(std::uint64_t id) const {
  long n = 0;
  for (Block* b = qhead_; b; b = b->next)
    for (std::uint32_t i = 0; i < b->end; ++i)
      if ((b->e[i].id.load(std::memory_order_relaxed) & ~kBlockingBit) == id) ++n;
  return n;
}

}  // namespace dss
