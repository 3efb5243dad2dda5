// hub.hpp -- the per-Lua-state core of darksidesync. No Lua in here: the
// Lua state is an opaque pointer handed to client callbacks, and the
// binding layer (src/lua/) does everything that touches Lua.
//
// The hub ties the concepts together, each in a file of its own:
//   ids.*         the process-wide registration table (utilid -> hub)
//   item.hpp      an item: its entry, a blocking item's record and states
//   queue.*       the item queue (and the hub's lock)
//   tickets.*     the parked blocking items behind the Lua side's handles
//   notify.*      the wake-ups: condition variable, fd, UDP
//   lua_thread.*  the consumer's marks: deadlock guard, in-flight levels
//   hub.cpp       creation, registrations, statistics
//   deliver.cpp   the delivery path: admit, wait for room, append, publish
//   consume.cpp   the consumer's steps: take, settle, claim, finish
//   wait.cpp      the Lua thread's sleep until items arrive
//   cancel.cpp    unreg, the cancellation of items, close
//
// Threading: every member is safe from any thread unless it says "Lua
// thread". No lock is ever held while a client callback runs.
#ifndef DSS_CORE_HUB_HPP
#define DSS_CORE_HUB_HPP

#include "clock.hpp"
#include "ids.hpp"
#include "item.hpp"
#include "lua_thread.hpp"
#include "notify.hpp"
#include "queue.hpp"
#include "tickets.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace dss {

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

// How close() calls a client's cancel callback: the binding passes one that
// runs it protected (a client may raise a Lua error from it).
using CancelCall = void (*)(void* ctx, DSS_cancel_1v0_t cancel, void* utilid);

class Hub {
 public:
  enum class State { running, closing, closed };

  // A new hub with one reference, owned by the caller. Hubs are never
  // freed: when its last reference goes, a hub is reset and kept for the
  // next create(), so that a producer holding a stale pointer from the id
  // table (see ids.hpp) can always lock it and find it is not its hub any
  // more. nullptr when out of memory.
  static Hub* create();
  // Hubs kept for reuse.
  static std::size_t pooled();
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

  // --- any thread: the 1v0, 2v0 and 2v1 entry points --------------------
  // Look the utilid up in the process-wide registration table; a stale or
  // garbage id yields DSS_ERR_INVALID_UTILID and is never dereferenced.
  static int deliver(void* utilid, DSS_decoder_1v0_t decode,
                     DSS_return_1v0_t ret, void* data);
  static int deliver2(void* utilid, DSS_decoder_1v0_t decode,
                      DSS_return_1v0_t ret, void* data, unsigned flags,
                      long timeout_ms);
  // An item of the binding's own (a channel operation completed for a
  // fiber of this state, src/lua/channel.cpp): fire and forget, and never
  // held back by the queue's bound (set_max): it neither waits for room
  // nor is rejected for the lack of it -- the party completing it may be
  // this Lua thread itself, and what it reports has already happened.
  // Counted as any delivered item.
  static int deliver_internal(void* utilid, DSS_decoder_1v0_t decode, void* data);
  // 2v1's deliverc: deliver2 for a regc registration.
  static int deliverc(void* utilid, DSS_decoder_2v0_t decode,
                      DSS_return_2v0_t ret, void* data, unsigned flags,
                      long timeout_ms);
  // Ends every item of the registration (cancellation callbacks, L = NULL)
  // and returns once none of its callbacks runs on the Lua thread any more
  // (unless called from inside one of them).
  static int unreg(void* utilid);
  static long queued(void* utilid);

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
  //   claim() -> call_return() -> finish_returned()   (answer() chains them)
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
  // The three steps above in one: claims the ticket's item, has call(b)
  // call call_return() for it -- under the binding's lua_pcall: a raise
  // must not cross this frame -- and releases its producer whatever call
  // did. False, and call not called, when claim() found nothing.
  template <class Call>
  bool answer(TicketId ticket, Call&& call) {
    Blocking* b = claim(ticket);
    if (!b) return false;
    call(b);
    finish_returned(b);  // b may be gone from here on
    return true;
  }
  // Whether the ticket's item is still parked.
  bool pending(TicketId ticket);

  // The thread taking items marks itself for as long as it does, so that
  // a delivery from it that would wait fails with WOULD_DEADLOCK instead
  // of deadlocking. Nests; the binding pairs every enter with a leave on
  // every path (errors included). Lua thread.
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
  std::size_t size() const { return q_.size(); }

  Stats stats();

  // Runs the close sequence: stop accepting, cancel every queued and
  // pending item, call each client's cancel (through call, when given),
  // unregister what is left, close the fd. Idempotent; call from the
  // thread closing the Lua state.
  void close(CancelCall call = nullptr, void* ctx = nullptr);
  State state() const { return state_.load(std::memory_order_acquire); }

  // --- wake-ups -------------------------------------------------------------
  // UDP datagrams: see Notifier::set_port.
  // Under the hub's lock, so that a delivery reads the settings either all
  // before or all after a change: an item anyone could see before the
  // change keeps the old settings' datagram (or none); one queued after
  // the queue was seen empty, after the change, gets the new one.
  bool set_port(int port, bool coalesce) {
    std::lock_guard<std::mutex> lock(q_.mu);
    return notify_.set_port(port, coalesce);
  }
  int port() const { return notify_.port(); }
  bool coalesce() const { return notify_.coalesce(); }

  // The wake-up fd, made on first use: readable exactly while the queue is
  // non-empty. -1 (errno set) when it cannot be made. Lua thread. Once it
  // was handed out (this call), stats() counts its wake-ups as notified;
  // wait()'s own use of it (to be interruptible) is not counted.
  int fd() { return fd_(true); }
  // fn(ctx) is called (no lock held) whenever the queue goes from empty to
  // non-empty: a session parked on the thread pool is woken so. ctx must
  // stay valid until the hub is recycled: a delivery under way may still
  // call it after close. release(ctx), when given, is called once then
  // (on the thread that let the hub go, no lock held): from there on
  // nothing calls fn. nullptr removes it (set a release once, with the
  // last hook).
  void set_wake_hook(void (*fn)(void*), void* ctx, void (*release)(void*) = nullptr);

  // 0 = unbounded.
  void set_max(std::size_t max);
  std::size_t max() const;

  static constexpr std::uint32_t kEntries = Queue::kEntries;

 private:
  Hub();
  ~Hub() = default;  // never run: see create()
  void start();
  void recycle();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  struct Registration {
    std::uint64_t id;
    void* libid;
    DSS_cancel_1v0_t cancel;
    bool cancelled;  // close() has called (or is calling) its cancel
  };
  // One delivery's arguments (deliver.cpp).
  struct Request {
    std::uint64_t id;
    DSS_decoder_1v0_t decode;
    DSS_return_1v0_t ret;
    void* data;
    unsigned flags;
    long timeout_ms;
    bool v2;  // 2v0 codes, checked flags
    bool timed;
    Clock::time_point deadline;
    bool unbounded = false;  // deliver_internal: the bound does not apply
  };
  using St = Blocking::St;

  // --- registrations (hub.cpp) ---
  void* reg_(void* libid, DSS_cancel_1v0_t cancel, int* err, void* context,
             const char* name, bool ctx);
  std::uint64_t find_libid_locked(void* libid) const;
  int fd_(bool handed_out);

  // --- the delivery path (deliver.cpp) ---
  static int deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data, unsigned flags,
                       long timeout_ms, bool v2, bool ctx = false);
  static constexpr int kMustWait = 1;  // full, and allowed to wait for room
  int admit_locked(const Request& rq);
  int room_locked(const Request& rq);
  int wait_room(std::unique_lock<std::mutex>& lock, const Request& rq);
  int enqueue_locked(const Request& rq, Blocking* rec, Notifier::Post* post);
  int deliver_ff(const Request& rq);
  int deliver_blocking(const Request& rq);
  int wait_ended(Blocking& b, const Request& rq);
  bool expire(Blocking& b);
  bool take_back_locked(Blocking& b, bool* queued);

  // --- the consumer (consume.cpp) ---
  // Moves the consumer's reservation forward under the lock; false when
  // the queue is empty (and then resets the wake-ups).
  bool extend();
  void took_locked(Blocking& b);
  // Blocking items claimed but still marked queued: each is marked taken
  // under the next lock the consumer takes anyway (its settle or finish),
  // or under extend's, before their entries' blocks can be let go (a
  // nested drain, from a decoder, may extend). Until then a timed-out
  // producer's kill fails on the claimed entry (its id is 0) and it waits
  // for the item's next change, as it does for a taken one.
  void untaken_push(Blocking* b);
  void took_untaken_locked();
  void settle_took_locked(Blocking& b);
  bool settle_locked();
  void settle_now();

  // --- the waits (wait.cpp) ---
  std::size_t wait_fd(bool timed, Clock::time_point deadline, int intr_fd);

  // --- cancellation (cancel.cpp) ---
  int unreg_local(std::uint64_t id);
  // After entries were killed (under the lock): the count, the kill
  // counter, the wake-ups, the producers waiting for room.
  void after_kills_locked(std::size_t killed);
  // Kills the queued and parked items of id (all when id == 0) and ends
  // them by cancellation, a bounded batch at a time.
  void cancel_items(std::uint64_t id);
  std::size_t take_parked_locked(std::uint64_t id, Taken* out, std::size_t room,
                                 bool* more);
  // Items taken back for cancellation and not yet ended, off the Lua
  // thread's in-flight marks (a batch of cancel_items, a producer's own
  // timed-out item): unreg waits for those of its id too, so that no
  // callback of a registration runs once its unreg returned. Each lives on
  // the stack of the thread ending them, linked under the lock.
  struct Ending {
    const Taken* items;
    std::size_t n, next;  // items[next, n) are still to end
    std::uintptr_t thread;
    Ending* link;
  };
  void add_ending_locked(Ending* e, const Taken* items, std::size_t n);
  static bool ending(const void* hub, std::uint64_t id);  // locked
  // Ends an item by cancellation on this thread, no lock held: its decoder
  // (t.decode set: it was still queued) or its return callback runs with
  // L = NULL, then it is counted (as timed out or cancelled) and done, and
  // e (which holds it) moves on.
  void end_by_cancel(const Taken& t, bool timed_out, Ending* e);
  void cancel_clients(CancelCall call, void* ctx);

  // The members are grouped by who writes them, each group on cache lines
  // of its own, so that the Lua thread's per-item work and the producers'
  // do not invalidate each other's lines (false sharing). The queue holds
  // the hub's lock, on the producers' line.
  Queue q_;
  // Read by every delivery, written when the queue goes non-empty.
  alignas(64) Notifier notify_;
  // The Lua thread's.
  LuaThread lua_{q_.mu};
  alignas(64) std::uint64_t decoded_ = 0, returned_ = 0;  // stats

  // --- rarely written ----------------------------------------------------------
  alignas(64) std::atomic<State> state_{State::running};
  std::atomic<int> refs_{1};
  std::size_t max_ = 0;  // under the lock
  std::atomic<int> room_waiters_{0};
  std::atomic<std::size_t> room_batch_{1};  // see set_max
  Tickets tickets_;                         // under the lock
  std::vector<Registration> regs_;          // under the lock
  Ending* endings_ = nullptr;               // under the lock
  Hub* pool_next_ = nullptr;                // while pooled
  std::condition_variable room_cv_;
  // stats, under the lock
  std::uint64_t cancelled_ = 0, timedout_ = 0, rejected_ = 0;
  std::atomic<std::uint64_t> blocked_{0};  // producers waiting
};

}  // namespace dss

#endif  // DSS_CORE_HUB_HPP
