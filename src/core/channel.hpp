// channel.hpp -- a share-nothing channel: Messages from any Lua state or C
// thread to any other, buffered (capacity n), unbounded, or a rendezvous
// (capacity 0: a put completes only when a get takes its message).
//
// Blocking follows Concurrent ML (and Guile fibers): an operation first
// tries to complete at once (put_now, get_now); if it cannot, it waits,
// registering a Waiter on the channel that points at a Suspension, the
// blocked operation's one fate. A fiber's choice of several operations
// registers one waiter per operation, all pointing at the same suspension:
// whoever claims the suspension first completes exactly one of them (its
// index), and the others are dropped. A waiter completed by another thread
// has its suspension's wake() called, outside every channel lock; that is
// how a fiber, a session or a C thread learns its operation completed.
#ifndef DSS_CORE_CHANNEL_HPP
#define DSS_CORE_CHANNEL_HPP

#include "message.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>

namespace dss {

// A blocked operation's fate. Refcounted: its owner holds one reference,
// each party completing it one for as long as it calls wake().
class Suspension {
 public:
  // What ended it: an operation completed (index: which), or the channel
  // was closed under it, or its owner cancelled it (timeout, another
  // operation of its choice completed locally).
  enum class End { none, done, closed, cancelled };
  using WakeFn = void (*)(Suspension* s, void* ctx);

  // Owner's reference: refs 1. early: fn calls woken() itself, as soon as
  // it no longer needs what ctx points at to stay (it took a reference of
  // its own), so that the owner's quiesce() does not wait out the rest of
  // the wake-up (a hub delivery, a pool thread's notify).
  static Suspension* create(WakeFn fn, void* ctx, bool early = false);
  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref();

  // The owner gives up waiting: true when it did (nothing completed, and
  // nothing will); false when something completed it first (read end()).
  bool cancel();
  // How it ended; End::none while still waiting. Once not none, index()
  // and (for a get) message() are final.
  End end() const;
  int index() const { return index_; }
  Message& message() { return msg_; }

  // For the channel: begin a completion (waiting -> busy), then finish it
  // (busy -> ended) or abort it (busy -> waiting).
  enum class Begin { got, busy, gone };
  Begin begin();
  void finish(End how, int index);
  void abort();
  bool busy() const { return state_.load(std::memory_order_acquire) == kBusy; }
  // Calls the wake function; then the wake-up is over (woken()), unless
  // the function said so itself (early).
  void wake() {
    wake_(this, ctx_);
    if (!early_) woken();
  }
  // A party that ended it is about to call wake(): counted from before the
  // end is visible until woken().
  void waking() { waking_.fetch_add(1, std::memory_order_relaxed); }
  void woken() { waking_.fetch_sub(1, std::memory_order_release); }
  // For the owner, before it frees what wake's ctx points at: returns once
  // no wake() is under way (or, early, has passed its woken()). (An owner that ended it itself -- cancel(), or
  // a wait that completed at once -- gets no wake() at all.)
  void quiesce() const;

 private:
  Suspension(WakeFn fn, void* ctx, bool early) : wake_(fn), ctx_(ctx), early_(early) {}
  enum : int { kWaiting, kBusy, kDone, kClosed, kCancelled };
  std::atomic<int> state_{kWaiting};
  std::atomic<int> refs_{1};
  std::atomic<int> waking_{0};
  int index_ = -1;
  Message msg_;  // a completed get's message
  WakeFn wake_;
  void* ctx_;
  bool early_;
};

class Channel;

// One operation of a suspension, waiting on one channel. Its owner (the
// blocked fiber's record, a C thread's stack) keeps it alive until the
// suspension ended and unwait() returned; while it is registered, its
// fields belong to the channel (read and written under its lock).
struct Waiter {
  Suspension* susp = nullptr;
  int index = 0;       // the operation's index in its choice
  bool put = false;
  Message msg;         // a put's message, until a get takes it
  // The channel's list, under its lock.
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  bool linked = false;
};

class Channel {
 public:
  enum class Res { done, closed, blocked, nomem };
  static constexpr std::size_t kUnbounded = SIZE_MAX;

  // refs 1; nullptr when out of memory.
  static Channel* create(std::size_t capacity);
  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref();

  // Tries to complete at once, without waiting: done (m moved in: taken by
  // a waiting get, or buffered), closed, blocked (it would wait; m kept) or
  // nomem. mine: the caller's own suspension, when it is trying one
  // operation of a choice already registered elsewhere (never matched
  // against itself; ended with `index` when this completes), else nullptr.
  Res put_now(Message& m, Suspension* mine = nullptr, int index = 0);
  // done (*out holds the message: not mine's message()), closed (and
  // empty), blocked or nomem.
  Res get_now(Message* out, Suspension* mine = nullptr, int index = 0);

  // Waits: registers w, unless the operation can complete now, in which
  // case it completes for w's suspension (done: the suspension ended with
  // w's index; closed) -- or finds that suspension already ended by
  // another party (blocked, w not registered: read the suspension).
  Res put_wait(Waiter* w);
  Res get_wait(Waiter* w);
  // Takes w off the channel if it is still on it. The owner calls it for
  // every waiter of an ended suspension before freeing them.
  void unwait(Waiter* w);

  // A get's message its taker could not use (the state it was for closed
  // before the completion reached its fiber): back at the head of the
  // buffer (whatever the capacity, even when closed: gets drain it), or to
  // a get waiting now. So a value put is received once or stays in the
  // channel. Lost only when out of memory.
  void give_back(Message& m);

  // No more puts (closed); gets take what is buffered, then closed. Every
  // waiter is ended with End::closed and woken.
  void close();
  bool closed() const;
  // Messages buffered, plus puts waiting (a rendezvous' pending puts; a
  // put whose choice completed elsewhere counts until its owner's
  // unwait().
  std::size_t len() const;
  std::size_t capacity() const { return cap_; }

  // Reachability from Lua, apart from the references: every Lua handle of
  // it, every message carrying one, and whatever may still make one (a
  // live session's end channel) attaches while it exists. Once the last
  // one detached no Lua state can ever get from it or put into it (the C
  // API cannot hand a channel back to Lua): it closes, so that a C thread
  // waiting on it is released (closed) and its later puts fail. Each takes
  // a reference too (ref()/unref() are the memory; these, the use).
  void attach() { attached_.fetch_add(1, std::memory_order_relaxed); }
  void detach() {
    if (attached_.fetch_sub(1, std::memory_order_acq_rel) == 1) close();
  }

 private:
  struct List {
    Waiter* head = nullptr;
    Waiter* tail = nullptr;
    void push(Waiter* w);
    void remove(Waiter* w);
  };
  explicit Channel(std::size_t cap) : cap_(cap) {}
  bool room_locked() const { return cap_ == kUnbounded || buf_.size() < cap_; }
  Waiter* match_locked(List& l, Suspension* mine, Suspension* skip, bool* mine_gone);
  Res put_locked(Message& m, Suspension* mine, int index, Suspension** woken);
  Res get_locked(Message* out, Suspension* mine, int index, Suspension** woken);
  void refill_locked(Suspension* skip, Suspension** woken);
  static Suspension* ended(Waiter* w, Suspension::End how);
  static Res finish_self(Suspension* mine, Res r, int index);
  static void wake_and_drop(Suspension* s);
  Res wait(Waiter* w, bool put);

  mutable std::mutex mu_;
  const std::size_t cap_;
  std::deque<Message> buf_;
  List getters_, putters_;
  std::size_t putters_n_ = 0;  // waiting puts
  bool closed_ = false;
  std::atomic<int> refs_{1};
  std::atomic<long> attached_{0};
};

}  // namespace dss

#endif  // DSS_CORE_CHANNEL_HPP
