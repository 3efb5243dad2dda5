// item.hpp -- one delivered item as the core sees it: its queue entry, a
// blocking item's record and the one place its state changes, what the
// consumer holds once it took one, and the ids that name them.
#ifndef DSS_CORE_ITEM_HPP
#define DSS_CORE_ITEM_HPP

#define DSS_NO_LUA_H
#include "darksidesync_api.h"

#include "clock.hpp"

#include <atomic>
#include <cstdint>

namespace dss {

// How a producer waits for its blocking item: a futex word that the hub
// bumps (under its lock) at every change the producer must see, its top
// bit set once the item ended. The producer sleeps on it without the
// hub's lock, and returns as soon as it reads the item ended: ending the
// item is the last thing the hub does to the record, which may be gone
// right after (a wake-up sent to its address then wakes nobody, or some
// later waiter there spuriously: every wait re-checks its word).
//
// The producer sets kSleeping before its first sleep, so that a change
// made before that costs no futex call. The wake-up for a change is sent
// after the hub's lock is let go (end() and bump() return whether one is
// due, Wake sends it): a futex call under the lock made every producer
// waiting for it wait that much longer.
class Signal {
 public:
  static constexpr std::uint32_t kEnded = 0x80000000u;
  static constexpr std::uint32_t kSleeping = 0x40000000u;
  // The word without kSleeping: what a change changes.
  std::uint32_t load() const { return w_.load(std::memory_order_acquire) & ~kSleeping; }
  // The futex word's address: sends the wake-up a change made due, once
  // the lock is let go; nullptr when none is due.
  class Wake {
   public:
    Wake() = default;
    explicit Wake(const void* addr) : addr_(addr) {}
    void send() const;
    explicit operator bool() const { return addr_ != nullptr; }
   private:
    const void* addr_ = nullptr;
  };
  // A change (under the hub's lock): the producer looks again.
  Wake bump() {
    return wake_due(w_.fetch_add(1, std::memory_order_release));
  }
  // The item ended (under the hub's lock): the record's last touch.
  Wake end() {
    return wake_due(w_.fetch_or(kEnded, std::memory_order_release));
  }
  // Sleeps while the word is still v (as load() read it), until the
  // deadline when timed; false when the deadline passed.
  bool wait(std::uint32_t v, bool timed, Clock::time_point deadline);

 private:
  Wake wake_due(std::uint32_t old) const {
    return old & kSleeping ? Wake(&w_) : Wake();
  }
  std::atomic<std::uint32_t> w_{0};
};

// A blocking item's record. It lives on its producer's stack, which stays
// valid until the item ends: the producer cannot return before that.
// Every field is read and written under the hub's lock.
//
// The item's life, each step in one function of Hub (which asserts the
// state it leaves, through move()):
//
//   queued --take--> taken --settle(n > 0)--> parked --claim--> returning
//     |                |                        |                  |
//     | kill           | settle(n <= 0),        | cancel, timeout  | finish_returned
//     v                v finish                 v                  v
//   done <-------------+---------------------- cancelling ------> done
//
// kill: unreg, close or the producer's timeout take a queued entry back;
// cancelling: its cancellation callback (decoder or return, L = NULL) runs.
struct Blocking {
  enum class St : unsigned char {
    queued,      // in the queue (entry valid)
    taken,       // the Lua thread took it: decoding
    parked,      // decoded; waits on the Lua side for its return (ticket set)
    returning,   // its return callback runs
    cancelling,  // its cancellation callback runs
    done         // ended; the producer may return
  };
  std::uint64_t id = 0;
  DSS_decoder_1v0_t decode = nullptr;
  DSS_return_1v0_t ret = nullptr;
  void* data = nullptr;
  struct Entry* entry = nullptr;  // while queued
  std::uint64_t ticket = 0;       // while parked (see TicketId)
  Signal sig;                     // the producer's wait (see Signal)
  St st = St::queued;
  unsigned char level = 0;  // its in-flight level while returning
  bool expired = false;     // the producer's deadline passed
  bool cancelled = false;
};

// The one place an item's state changes; aborts (a bug in the core, not
// something a client can cause) when it is not in `from`. Under the lock.
void move(Blocking& b, Blocking::St from, Blocking::St to);

// One queued item: 24 bytes. A blocking item's decoder and data live in
// its record (blk), so an entry holds either a fire-and-forget item's
// decoder and data or a blocking item's record; the top bit of the id tells
// which (registration ids never reach it).
struct Entry {
  // The registration's id, | kBlockingBit for a blocking item; 0 once
  // claimed.
  std::atomic<std::uint64_t> id;
  union {
    DSS_decoder_1v0_t decode;  // fire and forget
    Blocking* blk;             // blocking
  };
  void* data;  // fire and forget
};
constexpr std::uint64_t kBlockingBit = std::uint64_t(1) << 63;
// Set in the registration id of a regc registration (client context): its
// items' callbacks are the context-taking 2v1 ones, stored cast to the 1v0
// types. Below the top bit of a pointer, so it survives the utilid.
constexpr std::uint64_t kCtxIdBit = std::uint64_t(1) << (sizeof(void*) * 8 - 2);
static_assert(sizeof(Entry) == 24, "an entry is three words");

// An item the Lua thread took off the queue. It owns it until it ends:
// settle() or finish(). Empty (false) when none.
struct Taken {
  std::uint64_t id = 0;
  DSS_decoder_1v0_t decode = nullptr;
  void* data = nullptr;
  Blocking* blk = nullptr;
  int level = 0;  // its in-flight level (see LuaThread)

  explicit operator bool() const { return id != 0; }
  void* utilid() const;
};

// What a claimed entry holds; v is the id it held. A blocking item's
// decoder and data are read from its record, which stays valid until the
// item ends.
inline Taken taken_of(const Entry& e, std::uint64_t v) {
  Taken t;
  t.id = v & ~kBlockingBit;
  if (v & kBlockingBit) {
    t.blk = e.blk;
    t.decode = e.blk->decode;
    t.data = e.blk->data;
  } else {
    t.decode = e.decode;
    t.data = e.data;
  }
  return t;
}

// The Lua side's handle on a parked item: a slot of the hub's ticket table
// and the slot's generation, so that a stale or forged handle only misses.
// 0 is no ticket. See tickets.hpp.
using TicketId = std::uint64_t;

// Turns a utilid handed in from C into an id, and back.
inline std::uint64_t id_of(void* utilid) {
  return std::uint64_t(reinterpret_cast<std::uintptr_t>(utilid));
}
inline void* to_utilid(std::uint64_t id) {
  return reinterpret_cast<void*>(std::uintptr_t(id));
}
inline void* Taken::utilid() const { return to_utilid(id); }

}  // namespace dss

#endif  // DSS_CORE_ITEM_HPP
