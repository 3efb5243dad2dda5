// hub.hpp -- the per-Lua-state core of darksidesync: queue, registrations,
// blocking waits and the UDP notifier. No Lua in here: the Lua state is an
// opaque pointer handed to client callbacks, and the binding layer
// (src/lua/) does everything that touches Lua.
//
// Threading: every member is safe from any thread unless it says "Lua
// thread". No lock is ever held while a client callback runs.
#ifndef DSS_CORE_HUB_HPP
#define DSS_CORE_HUB_HPP

#define DSS_NO_LUA_H
#include "darksidesync_api.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace dss {

class Hub;
struct Ticket;

// A producer blocked in deliver() waits on this, on its own stack.
struct Waiter {
  std::condition_variable cv;
  bool released = false;
};

// One delivered item. Fire-and-forget items live on the heap; a blocking
// item lives on its producer's stack, which stays valid until the item ends
// (the producer cannot return before that).
struct Item {
  Item* next = nullptr;  // queue link, or pending-list link
  Item* prev = nullptr;  // pending-list link
  std::uint64_t id = 0;  // the registration's id (utilid)
  DSS_decoder_1v0_t decode = nullptr;
  DSS_return_1v0_t ret = nullptr;
  void* data = nullptr;
  Waiter* waiter = nullptr;  // set for blocking items
  Ticket* ticket = nullptr;  // set while pending on the Lua side

  void* utilid() const;
};

// The Lua side's handle on an item waiting for its return callback (the body
// of the waiting-thread callback userdata). Plain data: the binding layer
// places it in Lua-owned memory. `item` is non-null exactly while the item
// is pending and not yet ended; it is read and written under the hub's lock.
struct Ticket {
  Hub* hub;    // holds a reference
  Item* item;  // see above
};

// Turns a utilid handed in from C into an id, and back.
inline std::uint64_t id_of(void* utilid) {
  return std::uint64_t(reinterpret_cast<std::uintptr_t>(utilid));
}
inline void* to_utilid(std::uint64_t id) {
  return reinterpret_cast<void*>(std::uintptr_t(id));
}
inline void* Item::utilid() const { return to_utilid(id); }

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

  // --- any thread: the 1v0 deliver and unreg ---------------------------
  // Look the utilid up in the process-wide registration table; a stale or
  // garbage id yields DSS_ERR_INVALID_UTILID and is never dereferenced.
  static int deliver(void* utilid, DSS_decoder_1v0_t decode,
                     DSS_return_1v0_t ret, void* data);
  static int unreg(void* utilid);

  // --- consumer side (Lua thread) ---------------------------------------
  // Takes the oldest item off the queue; nullptr when empty. The caller now
  // owns the item and must end it: finish(), park(), or cancel_decoded().
  Item* pop();
  std::size_t size();

  // Ends an item: releases its producer, frees it if on the heap.
  void finish(Item* item);

  // A decoded blocking item now waits on the Lua side for its return
  // callback: links it to `ticket`. Returns false (and does nothing) when
  // its registration went away meanwhile or the hub is closing; the caller
  // then ends it with cancel_decoded().
  bool park(Item* item, Ticket* ticket);

  // Takes the item back from a ticket to end it; nullptr when it already
  // ended (cancelled by unreg or close). Safe on an empty ticket.
  static Item* claim(Ticket* ticket);

  // Whether the ticket's item is still pending (not yet ended).
  static bool pending(Ticket* ticket);

  // Ends a decoded item by cancellation: ret(NULL, data, utilid, 0).
  void cancel_decoded(Item* item);

  // Runs the close sequence: stop accepting, cancel every queued and
  // pending item, call each client's cancel, unregister what is left.
  // Idempotent; call from the thread closing the Lua state.
  void close();
  State state() const { return state_.load(std::memory_order_acquire); }

  // --- UDP notification ---------------------------------------------------
  // 0 disables; 1..65535 sends " <count>" to 127.0.0.1:port per item.
  // Returns false when a socket could not be created, or port is out of
  // range.
  bool set_port(int port);
  int port() const { return port_.load(std::memory_order_acquire); }

  // Lua-thread scratch owned by the binding layer (see closer in src/lua).
  void* lua_closer = nullptr;

 private:
  Hub() = default;
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  struct Registration {
    std::uint64_t id;
    void* libid;
    DSS_cancel_1v0_t cancel;
    bool cancelled;  // close() has called (or is calling) its cancel
  };

  int deliver_local(std::uint64_t id, DSS_decoder_1v0_t decode,
                    DSS_return_1v0_t ret, void* data);
  int unreg_local(std::uint64_t id);
  bool registered_locked(std::uint64_t id) const;
  // The id registered for libid, or 0.
  std::uint64_t find_libid_locked(void* libid) const;
  // Moves the queued and pending items of `id` (all when id == 0) into the
  // two lists; under the lock.
  void take_items_locked(std::uint64_t id, Item** queued, Item** pending);
  void cancel_lists(Item* queued, Item* pending);
  int notify(std::size_t count);

  std::atomic<int> refs_{1};
  std::atomic<State> state_{State::running};
  std::mutex mu_;
  Item* head_ = nullptr;  // queue, oldest first
  Item* tail_ = nullptr;
  std::size_t count_ = 0;
  Item* pending_ = nullptr;  // decoded items waiting for their return
  std::vector<Registration> regs_;
  std::atomic<int> port_{0};
  std::atomic<int> sock_{-1};
};

}  // namespace dss

#endif  // DSS_CORE_HUB_HPP
