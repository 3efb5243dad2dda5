// hub.hpp -- the per-Lua-state core of darksidesync: queue, registrations,
// blocking waits and the wake-ups (UDP datagrams, an fd, a condition
// variable). No Lua in here: the Lua state is an opaque pointer handed to
// client callbacks, and the binding layer (src/lua/) does everything that
// touches Lua.
//
// Threading: every member is safe from any thread unless it says "Lua
// thread". No lock is ever held while a client callback runs.
//
// The queue is a chain of blocks of 24-byte entries (no allocation per
// item). Producers append under the hub's lock. The Lua thread, the only
// consumer, reserves everything queued under one lock and then claims the
// entries one by one without it (an atomic exchange of the entry's id);
// unreg, close and timed-out producers kill entries the same way under the
// lock, so whoever claims an entry first owns it.
#ifndef DSS_CORE_HUB_HPP
#define DSS_CORE_HUB_HPP

#define DSS_NO_LUA_H
#include "darksidesync_api.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace dss {

class Hub;
struct Ticket;

// A blocking item's record. It lives on its producer's stack, which stays
// valid until the item ends: the producer cannot return before that.
// Every field is read and written under the hub's lock.
struct Blocking {
  enum class St : unsigned char {
    queued,  // in the queue (entry valid)
    busy,    // owned by whoever claimed it: decoding, returning, cancelling
    parked,  // decoded; waits on the Lua side for its return (ticket set)
    done     // ended; the producer may return
  };
  std::uint64_t id = 0;
  DSS_decoder_1v0_t decode = nullptr;
  DSS_return_1v0_t ret = nullptr;
  void* data = nullptr;
  struct Entry* entry = nullptr;  // while queued
  Ticket* ticket = nullptr;       // while parked
  Blocking* prev = nullptr;       // pending list, while parked
  Blocking* next = nullptr;
  std::condition_variable cv;
  St st = St::queued;
  bool expired = false;  // the producer's deadline passed
  bool cancelled = false;
};

// One queued item: 24 bytes. A blocking item's decoder and data live in
// its record (blk), so an entry holds either a fire-and-forget item's
// decoder and data or a blocking item's record; the top bit of the id tells
// which (registration ids come from a counter and never reach it).
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
static_assert(sizeof(Entry) == 24, "an entry is three words");

// An item the Lua thread took off the queue. It owns it until it ends:
// finish(), park(), or cancel_decoded(). Empty (false) when none.
struct Taken {
  std::uint64_t id = 0;
  DSS_decoder_1v0_t decode = nullptr;
  void* data = nullptr;
  Blocking* blk = nullptr;

  explicit operator bool() const { return id != 0; }
  void* utilid() const;
};

// The Lua side's handle on an item waiting for its return callback (the body
// of the waiting-thread callback userdata). Plain data: the binding layer
// places it in Lua-owned memory. `item` is non-null exactly while the item
// is parked and not yet ended; it is read and written under the hub's lock.
struct Ticket {
  Hub* hub;        // holds a reference
  Blocking* item;  // see above
};

// Turns a utilid handed in from C into an id, and back.
inline std::uint64_t id_of(void* utilid) {
  return std::uint64_t(reinterpret_cast<std::uintptr_t>(utilid));
}
inline void* to_utilid(std::uint64_t id) {
  return reinterpret_cast<void*>(std::uintptr_t(id));
}
inline void* Taken::utilid() const { return to_utilid(id); }

// Counters of stats(); see docs/lua-api.md.
struct Stats {
  std::uint64_t delivered, decoded, returned, cancelled, timedout, rejected,
      notified, notifyfailed, queued, maxqueued, blocked;
};

class Hub {
 public:
  enum class State { running, closing, closed };

  // A new hub with one reference, owned by the caller.
  static Hub* create();
  void ref();
  void unref();

  // --- registrations (Lua thread) ------------------------------------
  // As the 1v0 reg/getutilid, for this hub's Lua state.
  void* reg(void* libid, DSS_cancel_1v0_t cancel, int* err);
  void* getutilid(void* libid, int* err);

  // --- any thread: the 1v0 and 2v0 entry points -------------------------
  // Look the utilid up in the process-wide registration table; a stale or
  // garbage id yields DSS_ERR_INVALID_UTILID and is never dereferenced.
  static int deliver(void* utilid, DSS_decoder_1v0_t decode,
                     DSS_return_1v0_t ret, void* data);
  static int deliver2(void* utilid, DSS_decoder_1v0_t decode,
                      DSS_return_1v0_t ret, void* data, unsigned flags,
                      long timeout_ms);
  static int unreg(void* utilid);
  static long queued(void* utilid);

  // --- consumer side (Lua thread) ---------------------------------------
  // Takes the oldest item off the queue; empty when there is none.
  Taken take();
  // Items queued and not yet taken.
  std::size_t size() const;

  // Ends a taken item (decoded, or its decoder raised or returned 0):
  // releases its producer.
  void finish(const Taken& item);

  // A decoded blocking item now waits on the Lua side for its return
  // callback: links it to `ticket`. Returns false (and does nothing) when
  // its registration went away meanwhile or the hub is closing; the caller
  // then ends it with cancel_decoded().
  bool park(const Taken& item, Ticket* ticket);

  // Takes the item back from a ticket to call its return callback (then
  // end it with finish_returned); nullptr when it already ended. Safe on an
  // empty ticket.
  static Blocking* claim(Ticket* ticket);
  void finish_returned(Blocking* b);

  // Whether the ticket's item is still parked (not yet ended).
  static bool pending(Ticket* ticket);

  // Ends a decoded blocking item by cancellation: ret(NULL, data, id, 0).
  void cancel_decoded(Blocking* b);

  // The thread running poll/dispatch/wait marks itself, so that a
  // delivery from it that would wait fails instead of deadlocking.
  // Nests. Lua thread.
  //
  // sp: the address of a local of the Lua-facing C function calling it
  // (l_poll, l_dispatch, l_wait). poll runs fire-and-forget decoders with no
  // pcall, so a decoder that raises skips its drain_leave and leaves a stale
  // level behind; drain_enter and drain_reset_stale drop every level when
  // they find themselves not nested inside the outermost one: called from
  // another thread, or from a frame at or above its (stacks grow down).
  void drain_enter(const void* sp = nullptr);
  void drain_leave();
  void drain_reset_stale(const void* sp);

  // Wakes the producers waiting for room if the consumer made any since it
  // last did (take() does so a batch of room at a time). drain_leave()
  // calls it. Lua thread.
  void flush_room();

  // Blocks until the queue is non-empty or the timeout (seconds; < 0 = no
  // limit) passed; returns the queue size. Lua thread.
  std::size_t wait(double timeout_s);

  // Lua-thread counters of what the binding did.
  void count_decoded() { ++decoded_; }
  void count_returned() { ++returned_; }

  Stats stats();

  // Runs the close sequence: stop accepting, cancel every queued and
  // pending item, call each client's cancel, unregister what is left,
  // close the fd. Idempotent; call from the thread closing the Lua state.
  void close();
  State state() const { return state_.load(std::memory_order_acquire); }

  // --- wake-ups -------------------------------------------------------------
  // 0 disables; 1..65535 sends " <count>" to 127.0.0.1:port per item
  // (coalesce: only when the queue goes from empty to non-empty). Returns
  // false when a socket could not be created, or port is out of range.
  bool set_port(int port, bool coalesce);
  int port() const { return port_.load(std::memory_order_acquire); }
  bool coalesce() const { return coalesce_.load(std::memory_order_acquire); }

  // The wake-up fd, made on first use: readable exactly while the queue is
  // non-empty. -1 (errno set) when it cannot be made. Lua thread.
  int fd();

  // 0 = unbounded.
  void set_max(std::size_t max);
  std::size_t max() const;

  // Lua-thread scratch owned by the binding layer (see closer in src/lua).
  void* lua_closer = nullptr;
  void* lua_box = nullptr;

  // A block (header and entries) is one 8 KiB malloc chunk: 8176 bytes
  // requested, plus glibc's 8-byte size field, rounded to 16.
  static constexpr std::uint32_t kEntries = 340;

 private:
  Hub();
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  struct Registration {
    std::uint64_t id;
    void* libid;
    DSS_cancel_1v0_t cancel;
    bool cancelled;  // close() has called (or is calling) its cancel
  };
  struct Block {
    Block* next;
    std::uint32_t end;  // entries [0, end) are written
    Entry e[kEntries];
  };

  // deliver and deliver2 (v2: flags are checked, 2v0 codes returned).
  static int deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data, unsigned flags,
                       long timeout_ms, bool v2);
  // What a fire-and-forget delivery made under the table's lock leaves to
  // its caller: the Lua thread to wake, the datagram to send.
  struct Post {
    bool wake = false, send = false;
    std::size_t depth = 0;  // the datagram's count
  };
  // Queues one item (and, with rec, waits for it to end). With post, the
  // caller holds the table's lock instead of a reference: when the item
  // would have to wait for room, returns kMustWait having done nothing;
  // when it is queued, the wake-up and the datagram go into *post.
  static constexpr int kMustWait = 1;
  int after_queue(const Post& p);
  int deliver_local(std::uint64_t id, DSS_decoder_1v0_t decode,
                    DSS_return_1v0_t ret, void* data, unsigned flags,
                    long timeout_ms, bool v2, Blocking* rec, Post* post);
  int wait_blocking(std::unique_lock<std::mutex>& lock, Blocking& b,
                    bool timed,
                    std::chrono::steady_clock::time_point deadline);
  int unreg_local(std::uint64_t id);
  long queued_local(std::uint64_t id);
  bool registered_locked(std::uint64_t id) const;
  std::uint64_t find_libid_locked(void* libid) const;
  std::size_t size_locked() const;
  // Moves the consumer's reservation forward under the lock; false when
  // the queue is empty (and then resets the wake-ups).
  bool extend();
  void settle_locked();
  // Kills the queued and parked items of id (all when id == 0) and ends
  // them by cancellation, a bounded batch at a time.
  void cancel_items(std::uint64_t id);
  void end_cancelled(Taken* items, std::size_t n);
  void signal_locked();
  void reset_locked();
  int notify_udp(std::size_t count);
  static bool draining_here(const Hub* hub);

  // The members are grouped by who writes them, each group on cache lines
  // of its own, so that the Lua thread's per-item work and the producers'
  // do not invalidate each other's lines (false sharing).

  // --- written by producers on every deliver (under mu_) ---------------------
  alignas(64) mutable std::mutex mu_;
  std::atomic<int> refs_{1};
  // The queue: blocks from qhead_ to qtail_.
  Block* qhead_ = nullptr;
  Block* qtail_ = nullptr;
  Block* spare_ = nullptr;
  // Items queued, not killed by others, not yet settled by the consumer.
  std::atomic<std::size_t> count_{0};
  bool signalled_ = false;  // a wake-up is out for the current non-empty run
  bool lua_waiting_ = false;
  std::uint64_t delivered_ = 0, maxqueued_ = 0;  // stats, under mu_
  std::atomic<std::uint64_t> notified_{0}, notifyfailed_{0};  // stats

  // --- the Lua thread's, per item ------------------------------------------
  // Items the consumer took since it last settled. Producers read it (for
  // the depth: a new maximum, a datagram's count, room in a bounded queue),
  // so it has a cache line of its own: their reads do not take the line of
  // the consumer's other per-item fields away from it.
  alignas(64) std::atomic<std::size_t> unsettled_{0};
  // The consumer's position and reservation (changed under mu_ when blocks
  // are unlinked).
  alignas(64) Block* cblock_ = nullptr;
  std::uint32_t cpos_ = 0;
  Block* lim_block_ = nullptr;
  std::uint32_t lim_end_ = 0;
  std::uint64_t seen_kills_ = 0;  // kills_ when the reservation was made
  std::size_t live_left_ = 0;     // its live entries not yet taken, at most
  std::atomic<std::uintptr_t> drainer_{0};
  int drain_depth_ = 0;
  std::uintptr_t drain_sp_ = 0;  // the outermost drain's frame (see drain_enter)
  std::uint64_t decoded_ = 0, returned_ = 0;  // stats

  // --- rarely written ----------------------------------------------------------
  alignas(64) std::atomic<State> state_{State::running};
  // Bumped (under mu_, after the count) whenever unreg, close or a timeout
  // kills queued entries: tells take() that its reservation may hold no
  // live entry before its end, so it must look at the count.
  std::atomic<std::uint64_t> kills_{0};
  std::size_t max_ = 0;  // under mu_
  std::atomic<int> room_waiters_{0};
  std::atomic<std::size_t> room_batch_{1};  // see set_max
  int efd_ = -1;    // wake-up fd (read end); under mu_
  int efd_w_ = -1;  // write end (same as efd_ for an eventfd)
  std::atomic<int> port_{0};
  std::atomic<bool> coalesce_{false};
  std::atomic<int> sock_{-1};
  Blocking* pending_ = nullptr;  // parked items
  std::vector<Registration> regs_;
  std::condition_variable room_cv_;
  std::condition_variable wait_cv_;
  // stats, under mu_
  std::uint64_t cancelled_ = 0, timedout_ = 0, rejected_ = 0, blocked_ = 0;
};

}  // namespace dss

#endif  // DSS_CORE_HUB_HPP
