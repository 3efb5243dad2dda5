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

// A blocking item's record. It lives on its producer's stack, which stays
// valid until the item ends: the producer cannot return before that.
// Every field is read and written under the hub's lock.
//
// The item's life, each step in one function of Hub (which asserts the
// state it leaves):
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
  std::condition_variable cv;
  St st = St::queued;
  unsigned char level = 0;  // its in-flight level while returning (see Hub)
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
  int level = 0;  // its in-flight level (see Hub::inflight_)

  explicit operator bool() const { return id != 0; }
  void* utilid() const;
};

// The Lua side's handle on a parked item (what a waiting-thread callback
// holds): a slot of the hub's ticket table and the slot's generation, so
// that a stale or forged handle only misses. 0 is no ticket. The Lua side
// keeps plain numbers, never a pointer into the core: a handle that is lost
// without its finalizer (debug.setmetatable(wt, nil)) leaves its item
// parked until close, unreg or its producer's timeout end it.
using TicketId = std::uint64_t;

// Turns a utilid handed in from C into an id, and back.
inline std::uint64_t id_of(void* utilid) {
  return std::uint64_t(reinterpret_cast<std::uintptr_t>(utilid));
}
inline void* to_utilid(std::uint64_t id) {
  return reinterpret_cast<void*>(std::uintptr_t(id));
}
inline void* Taken::utilid() const { return to_utilid(id); }

// Counters of stats(); see docs/lua-api.md.
// The statistics, once: the fields of Stats and, in this order, the keys
// of the Lua stats() table (docs/lua-api.md lists them; test_stats checks).
#define DSS_STATS_LIST(X) \
  X(delivered)            \
  X(decoded)              \
  X(returned)             \
  X(cancelled)            \
  X(timedout)             \
  X(rejected)             \
  X(notified)             \
  X(notifyfailed)         \
  X(queued)               \
  X(maxqueued)            \
  X(blocked)

struct Stats {
#define DSS_STATS_FIELD(name) std::uint64_t name;
  DSS_STATS_LIST(DSS_STATS_FIELD)
#undef DSS_STATS_FIELD
};

// Timeouts (deliver2's milliseconds, wait()'s seconds) longer than this
// mean "no limit": a deadline past it could not be held by the clock.
constexpr long long kTimeoutMaxMs = DSS_TIMEOUT_MAX_MS;

// How close() calls a client's cancel callback: the binding passes one that
// runs it protected (a client may raise a Lua error from it).
using CancelCall = void (*)(void* ctx, DSS_cancel_1v0_t cancel, void* utilid);

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
  // As reg, with a context and a name (2v1's regc): the registration's
  // callbacks are the context-taking ones.
  void* regc(void* libid, DSS_cancel_2v0_t cancel, void* context,
             const char* name, int* err);
  void* getutilid(void* libid, int* err);

  // --- any thread: the 1v0 and 2v0 entry points -------------------------
  // Look the utilid up in the process-wide registration table; a stale or
  // garbage id yields DSS_ERR_INVALID_UTILID and is never dereferenced.
  static int deliver(void* utilid, DSS_decoder_1v0_t decode,
                     DSS_return_1v0_t ret, void* data);
  static int deliver2(void* utilid, DSS_decoder_1v0_t decode,
                      DSS_return_1v0_t ret, void* data, unsigned flags,
                      long timeout_ms);
  // Ends every item of the registration (cancellation callbacks, L = NULL)
  // and returns once none of its callbacks runs on the Lua thread any more
  // (unless called from inside one of them).
  static int unreg(void* utilid);
  static long queued(void* utilid);
  // 2v1's deliverc: deliver2 for a regc registration.
  static int deliverc(void* utilid, DSS_decoder_2v0_t decode,
                      DSS_return_2v0_t ret, void* data, unsigned flags,
                      long timeout_ms);

  // Calls a client's cancel callback as its registration wants it (with
  // its context for a regc one). Never under a lock.
  static void call_cancel(DSS_cancel_1v0_t cancel, void* utilid);
  // The name a regc registration gave, copied into buf (n > 0; always
  // terminated): its length, or 0 when it has none (a reg one, or gone).
  static std::size_t client_name(void* utilid, char* buf, std::size_t n);

  // --- consumer side (Lua thread) ---------------------------------------
  // The Lua side drives each item through these, in this order:
  //   take() -> call_decoder() -> settle()   (or finish() if it raised)
  //   and for a parked blocking item, later:
  //   claim() -> call_return() -> finish_returned()
  // call_decoder() and call_return() call client code, which may raise a Lua
  // error: the binding calls them under lua_pcall and ends the item (finish,
  // finish_returned) whatever happened.

  // Takes the oldest item off the queue; empty when there is none.
  Taken take();
  // Calls the item's decoder with L; returns what it returned.
  int call_decoder(const Taken& item, lua_State* L);
  // Ends a decoded item: a fire-and-forget one, or one whose decoder
  // returned n <= 0, ends here (its producer is released); a blocking one
  // with n > 0 parks, waiting for its return callback: returns its ticket,
  // or 0 when its registration went away or the hub is closing meanwhile
  // (then it has ended by cancellation, ret(L = NULL), on this thread).
  TicketId settle(const Taken& item, int n);
  // Ends a taken item whose decoder raised, as a decoder returning 0.
  void finish(const Taken& item);

  // Takes a parked item back from its ticket to call its return callback;
  // nullptr when it already ended (answered, cancelled, timed out) or the
  // ticket is stale or garbage.
  Blocking* claim(TicketId ticket);
  // Calls the claimed item's return callback.
  int call_return(Blocking* b, lua_State* L, int garbage);
  // Ends a claimed item: releases its producer. b may be gone after.
  void finish_returned(Blocking* b);
  // Whether the ticket's item is still parked.
  bool pending(TicketId ticket);

  // The thread running poll/dispatch/wait marks itself for as long as it
  // runs, so that a delivery from it that would wait fails with
  // WOULD_DEADLOCK instead of deadlocking. Nests; the binding pairs every
  // enter with a leave on every path (errors included). Lua thread.
  void drain_enter();
  void drain_leave();
  // Marks the calling thread as the Lua thread (drain_enter does too): a
  // deliver from it that would wait with no limit returns WOULD_DEADLOCK.
  // The binding calls it when the hub starts.
  void lua_thread_here();

  // Wakes the producers waiting for room if the consumer made any since it
  // last did (take() does so a batch of room at a time). drain_leave()
  // calls it. Lua thread.
  void flush_room();

  // Blocks until the queue is non-empty or the timeout (seconds; < 0 = no
  // limit) passed; returns the queue size. With intr_fd >= 0 it sleeps in
  // poll(2) on the wake-up fd and intr_fd, and also returns (the size, maybe
  // 0) as soon as intr_fd is readable: a signal handler writing to it
  // interrupts the wait. Lua thread.
  std::size_t wait(double timeout_s, int intr_fd = -1);

  // Items queued and not yet taken.
  std::size_t size() const;

  Stats stats();

  // Runs the close sequence: stop accepting, cancel every queued and
  // pending item, call each client's cancel (through call, when given),
  // unregister what is left, close the fd. Idempotent; call from the
  // thread closing the Lua state.
  void close(CancelCall call = nullptr, void* ctx = nullptr);
  State state() const { return state_.load(std::memory_order_acquire); }

  // --- wake-ups -------------------------------------------------------------
  // 0 disables; 1..65535 sends " <count>" to 127.0.0.1:port per item
  // (coalesce: only when the queue goes from empty to non-empty). Returns
  // false when a socket could not be created, or port is out of range.
  bool set_port(int port, bool coalesce);
  int port() const { return port_.load(std::memory_order_acquire); }
  bool coalesce() const { return coalesce_.load(std::memory_order_acquire); }

  // The wake-up fd, made on first use: readable exactly while the queue is
  // non-empty. -1 (errno set) when it cannot be made. Lua thread. Once it
  // was handed out (getfd), stats() counts its wake-ups as notified;
  // wait()'s own use of it (to be interruptible) is not counted.
  int fd() { return fd_(true); }

  // 0 = unbounded.
  void set_max(std::size_t max);
  std::size_t max() const;

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
    std::uint32_t seq;  // when it was linked (the cancel walk's resume check)
    Entry e[kEntries];
  };
  // A ticket table slot: the parked item it holds, and its generation
  // (bumped each time the slot is let go, so old tickets miss).
  struct Slot {
    Blocking* item;
    std::uint32_t gen;
    std::uint32_t next_free;
  };
  using St = Blocking::St;

  // deliver and deliver2 (v2: flags are checked, 2v0 codes returned).
  static int deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data, unsigned flags,
                       long timeout_ms, bool v2, bool ctx = false);
  void* reg_(void* libid, DSS_cancel_1v0_t cancel, int* err, void* context,
             const char* name, bool ctx);
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
  bool would_deadlock(bool timed) const;
  std::uint64_t find_libid_locked(void* libid) const;
  std::size_t size_locked() const;
  // Moves the consumer's reservation forward under the lock; false when
  // the queue is empty (and then resets the wake-ups).
  bool extend();
  void settle_locked();
  // After entries were killed (under the lock): the count, the kill
  // counter, the wake-ups, the producers waiting for room.
  void after_kills_locked(std::size_t killed);
  // Kills the queued and parked items of id (all when id == 0) and ends
  // them by cancellation, a bounded batch at a time.
  void cancel_items(std::uint64_t id);
  void end_cancelled(Taken* items, std::size_t n);
  // Waits until no callback of id runs on the Lua thread (see inflight_).
  void quiesce(std::uint64_t id);
  // In-flight levels (see inflight_): the Lua thread claims the next one
  // before it claims an item, and lets it go when the item ended.
  int push_inflight();
  void set_inflight(int level, std::uint64_t id);
  void pop_inflight(int level);
  bool inflight_has(std::uint64_t id) const;
  void signal_locked();
  void arm_fd_locked();
  int fd_(bool handed_out);
  std::size_t wait_fd(bool timed, std::chrono::steady_clock::time_point deadline, int intr_fd);
  void reset_locked();
  int notify_udp(std::size_t count);
  // The one place an item's state changes; asserts where it comes from.
  static void move(Blocking& b, St from, St to);
  // Ticket table (under the lock).
  TicketId ticket_put_locked(Blocking* b);  // 0 when out of memory
  Blocking* ticket_get_locked(TicketId t) const;
  void ticket_drop_locked(TicketId t);

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
  std::uint32_t block_seq_ = 0;
  // Items queued, not killed by others, not yet settled by the consumer.
  std::atomic<std::size_t> count_{0};
  bool signalled_ = false;  // a wake-up is out for the current non-empty run
  bool fd_armed_ = false;
  bool fd_handed_out_ = false;  // getfd gave it to the Lua side   // the fd was made readable and not reset since
  bool lua_waiting_ = false;
  std::uint64_t delivered_ = 0, maxqueued_ = 0;  // stats, under mu_
  std::atomic<std::uint64_t> notified_{0}, notifyfailed_{0};  // stats

  // --- the Lua thread's, per item ------------------------------------------
  // Items the consumer took since it last settled. Producers read it (for
  // the depth: a new maximum, a datagram's count, room in a bounded queue),
  // so it has a cache line of its own: their reads do not take the line of
  // the consumer's other per-item fields away from it.
  alignas(64) std::atomic<std::size_t> unsettled_{0};
  // The registration ids whose callbacks the Lua thread is running or about
  // to run, one per nesting level (0: none; a decoder's allocation can run
  // a waiting-thread callback's finalizer, which runs another return
  // callback inside it), and that thread: unreg waits until none is its id.
  // A level is set before an entry or ticket is claimed, so that whoever
  // fails to kill a claimed entry sees it; levels deeper than kLevels count
  // in inflight_over_, and unreg waits for those whatever their id.
  static constexpr int kLevels = 7;
  alignas(64) std::atomic<std::uint64_t> inflight_[kLevels] = {};
  std::atomic<int> inflight_over_{0};
  int inflight_depth_ = 0;  // Lua thread
  std::atomic<std::uintptr_t> inflight_thread_{0};
  // The consumer's position and reservation (changed under mu_ when blocks
  // are unlinked).
  Block* cblock_ = nullptr;
  std::uint32_t cpos_ = 0;
  Block* lim_block_ = nullptr;
  std::uint32_t lim_end_ = 0;
  std::uint64_t seen_kills_ = 0;  // kills_ when the reservation was made
  std::size_t live_left_ = 0;     // its live entries not yet taken, at most
  std::atomic<std::uintptr_t> drainer_{0};
  // The thread that last entered a drain: the Lua thread, as far as the
  // hub can tell (see would_deadlock).
  std::atomic<std::uintptr_t> lua_thread_{0};
  int drain_depth_ = 0;
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
  std::atomic<int> quiet_waiters_{0};       // unreg calls in quiesce()
  int efd_ = -1;    // wake-up fd (read end); under mu_
  int efd_w_ = -1;  // write end (same as efd_ for an eventfd)
  std::atomic<int> port_{0};
  std::atomic<bool> coalesce_{false};
  std::atomic<int> sock_{-1};
  std::vector<Slot> slots_;  // the ticket table
  std::uint32_t free_slot_;  // head of its free list
  std::size_t parked_ = 0;   // slots holding an item
  std::vector<Registration> regs_;
  std::condition_variable room_cv_;
  std::condition_variable wait_cv_;
  std::condition_variable quiet_cv_;
  // stats, under mu_
  std::uint64_t cancelled_ = 0, timedout_ = 0, rejected_ = 0, blocked_ = 0;
};

}  // namespace dss

#endif  // DSS_CORE_HUB_HPP
