// queue.hpp -- the item queue: a chain of blocks of 24-byte entries (no
// allocation per item), many producers, one consumer.
//
// Producers append under the hub's lock (which lives here, on the
// producers' cache line). The consumer (the Lua thread) reserves everything
// queued under that lock and then claims the entries one by one without it
// (an atomic exchange of the entry's id); unreg, close and timed-out
// producers kill entries the same way under the lock, so whoever claims an
// entry first owns it.
//
// Counting: count_ is the items queued, not killed and not yet settled;
// unsettled_ the items the consumer took since it last settled (under the
// lock). The queue's size is the difference.
#ifndef DSS_CORE_QUEUE_HPP
#define DSS_CORE_QUEUE_HPP

#include "item.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace dss {

class Queue {
 public:
  // A block (header and entries) is one 8 KiB malloc chunk: 8176 bytes
  // requested, plus glibc's 8-byte size field, rounded to 16.
  static constexpr std::uint32_t kEntries = 340;

  Queue() = default;
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Back to empty, every block freed (locked; the items end nowhere).
  void reset_locked();

  // The hub's one lock: whatever says "locked", here and in the hub, is
  // under it.
  mutable std::mutex mu;

  // --- producers (under mu) ----------------------------------------------
  // Appends an item; false when no block could be allocated.
  bool push_locked(std::uint64_t id, DSS_decoder_1v0_t decode, void* data);
  // Appends a blocking item's record (its entry is set).
  bool push_locked(Blocking* rec);
  // The depth after a push, for a datagram's count: read only when need
  // is set (it reads the consumer's cache line); returns 0 otherwise.
  // (maxqueued is kept by the push itself: see appended_locked.)
  std::size_t depth_after_push_locked(bool need) { return need ? size() : 0; }
  std::uint64_t delivered_locked() const { return delivered_; }
  std::uint64_t maxqueued_locked() const { return maxqueued_; }

  // Items queued and not yet taken: exact under the lock; elsewhere a
  // bound the consumer may read.
  std::size_t size() const {
    std::size_t c = count_.load(std::memory_order_relaxed);
    std::size_t u = unsettled_.load(std::memory_order_relaxed);
    return c > u ? c - u : 0;
  }
  std::size_t unsettled() const {
    return unsettled_.load(std::memory_order_relaxed);
  }

  // --- the consumer (Lua thread) -------------------------------------------
  // Folds the items taken since the last settle into the count (locked).
  void settle_locked();
  // Moves the consumer's reservation forward to everything queued;
  // returns false when nothing is (locked). Blocks it has passed are
  // chained on *freed for the caller to delete once it unlocked.
  struct Block;
  bool reserve_locked(Block** freed);
  static void free_blocks(Block* freed);
  // Claims the next live entry of the reservation: mark(id) runs just
  // before each claim (see Hub::take). Empty when the reservation holds no
  // live entry any more; *ended says the consumer should reserve again now
  // (so the wake-ups reset as soon as the queue is empty).
  template <typename Mark>
  Taken claim(Mark mark, bool* ended);
  // True when entries were killed since the reservation was made (the
  // read-modify-write orders it with the killer's; see kills_locked).
  bool killed_since_reserve() {
    return kills_.fetch_add(0, std::memory_order_acq_rel) != seen_kills_;
  }

  // --- kills (locked): unreg, close, a producer's timeout ----------------------
  // Takes a blocking item's queued entry back; false when the consumer
  // claimed it first.
  static bool kill(Blocking& b);
  // Where a kill walk stopped: resumed there if that block is still
  // linked and the same one (address and link number), else from the
  // front (the consumer has passed it then, and every entry before it).
  struct Cursor {
    Block* block = nullptr;
    std::uint32_t seq = 0, at = 0;
  };
  // Kills the entries of id (all when id == 0) from the cursor on, at most
  // room of them, into out; returns how many, and sets *more when it
  // stopped for room.
  std::size_t kill_walk_locked(std::uint64_t id, Cursor* c, Taken* out,
                               std::size_t room, bool* more);
  // After entries were killed: the count and the kill counter. Returns
  // true when the queue is empty for sure.
  bool kills_locked(std::size_t killed);
  // Queued entries of id.
  long count_locked(std::uint64_t id) const;

  struct Block {
    Block* next;
    std::uint32_t end;  // entries [0, end) are written
    std::uint32_t seq;  // when it was linked (the kill walk's resume check)
    Entry e[kEntries];
  };

 private:
  Entry* append_locked();
  Block* new_block_locked();
  void appended_locked();
  // The count changes only under the lock: a plain store, no
  // read-modify-write (d wraps: 0 - n subtracts n).
  void add_count_locked(std::size_t d) {
    count_.store(count_.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
  }
  Block* find_resume_locked(const Cursor& c, std::uint32_t* at) const;

  // --- written by producers on every deliver (under mu) ---------------------
  Block* qhead_ = nullptr;
  Block* qtail_ = nullptr;
  Block* spare_ = nullptr;
  std::uint32_t block_seq_ = 0;
  std::atomic<std::size_t> count_{0};
  std::uint64_t delivered_ = 0, maxqueued_ = 0;  // stats

  // --- the consumer's, per item ---------------------------------------------
  // Producers read it (for the depth: a new maximum, a datagram's count,
  // room in a bounded queue), so it has a cache line of its own: their
  // reads do not take the line of the consumer's other fields away.
  alignas(64) std::atomic<std::size_t> unsettled_{0};
  alignas(64) Block* cblock_ = nullptr;  // position (changed under mu when
  std::uint32_t cpos_ = 0;               // blocks are unlinked)
  Block* lim_block_ = nullptr;           // the reservation's end
  std::uint32_t lim_end_ = 0;
  std::uint64_t seen_kills_ = 0;  // kills_ when the reservation was made
  std::size_t live_left_ = 0;     // its live entries not yet taken, at most

  // --- rarely written ----------------------------------------------------------
  // Bumped (under mu, after the count) whenever entries are killed: tells
  // the consumer that its reservation may hold no live entry before its
  // end, so it must look at the count.
  alignas(64) std::atomic<std::uint64_t> kills_{0};
};

// The producers' path, inline: every delivery runs it.

// The entry at the tail, in a new block when the last one is full; nullptr
// when none could be allocated.
inline Entry* Queue::append_locked() {
  Block* t = qtail_;
  if (!t || t->end == kEntries) t = new_block_locked();
  return t ? &t->e[t->end] : nullptr;
}

inline void Queue::appended_locked() {
  ++qtail_->end;
  // The new maximum, if any, is the depth the moment the item becomes
  // visible (the count's store: size() may return it from then on). The
  // consumer takes items without the lock, so its count of items taken
  // is read before that store: read after it, a take in between would
  // hide a depth queuesize() could have returned. (Until the next settle,
  // which needs the lock, that count only grows: the depth read here is
  // never below one anyone can see, and never above the bound the
  // producer was admitted under.) Read only when the depth can be a new
  // maximum: the queue count bounds it from above.
  std::size_t c = count_.load(std::memory_order_relaxed) + 1;
  if (c > maxqueued_) {
    std::size_t u = unsettled_.load(std::memory_order_relaxed);
    std::size_t depth = c > u ? c - u : 0;
    if (depth > maxqueued_) maxqueued_ = depth;
  }
  count_.store(c, std::memory_order_relaxed);
  ++delivered_;
}

inline bool Queue::push_locked(std::uint64_t id, DSS_decoder_1v0_t decode, void* data) {
  Entry* e = append_locked();
  if (!e) return false;
  e->decode = decode;
  e->data = data;
  e->id.store(id, std::memory_order_relaxed);
  appended_locked();
  return true;
}

inline bool Queue::push_locked(Blocking* rec) {
  Entry* e = append_locked();
  if (!e) return false;
  e->blk = rec;
  e->data = nullptr;
  rec->entry = e;
  e->id.store(rec->id | kBlockingBit, std::memory_order_relaxed);
  appended_locked();
  return true;
}

template <typename Mark>
Taken Queue::claim(Mark mark, bool* ended) {
  while (cblock_ && (cblock_ != lim_block_ || cpos_ < lim_end_)) {
    if (cpos_ == kEntries) {
      cblock_ = cblock_->next;  // linked before the reservation was made
      cpos_ = 0;
      continue;
    }
    Entry& e = cblock_->e[cpos_++];
    std::uint64_t id = e.id.load(std::memory_order_relaxed);
    if (!id) continue;  // killed by unreg, close or a timeout
    mark(id & ~kBlockingBit);
    id = e.id.exchange(0, std::memory_order_acq_rel);
    if (!id) continue;  // killed a moment ago
    unsettled_.store(unsettled_.load(std::memory_order_relaxed) + 1,
                     std::memory_order_relaxed);
    // The reservation's live entries are counted when it is made; entries
    // killed since then can end them earlier, and only then is the shared
    // count (written by every deliver) read.
    if (live_left_ > 0) --live_left_;
    *ended = (cblock_ == lim_block_ && cpos_ == lim_end_) || live_left_ == 0 ||
             (kills_.load(std::memory_order_acquire) != seen_kills_ && size() == 0);
    return taken_of(e, id);
  }
  return Taken{};
}

}  // namespace dss

#endif  // DSS_CORE_QUEUE_HPP
