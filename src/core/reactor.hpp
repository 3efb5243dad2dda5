// reactor.hpp -- wakes parked sessions: when a deadline passes, or when an
// fd becomes readable. No Lua in here.
//
// A session that has nothing runnable parks and holds no thread (pool.hpp).
// Before it parks it arms its Entry: "wake me at my next timer, or when my
// poller's fd is readable, whichever comes first" (one fd a session
// suffices: an epoll fd is itself pollable). One reactor thread serves every
// entry: a heap of deadlines, and an epoll set of one-shot fds; its only
// sleep is one epoll_wait until the earliest deadline. An arm fires once,
// then the entry is unarmed until armed again; arming again replaces the
// previous arm (its fire, when not yet under way, is dropped).
//
// Firing calls the wake function (Pool::wake) outside the reactor's lock;
// disarm() waits for a call under way for its entry, so that once it
// returned the owner may free the entry and the Runnable behind it.
//
// Cost: arming is a few heap steps and, with an fd, one epoll_ctl; it
// allocates only when more entries are armed than ever before. Disarming is
// O(log n). Ten thousand parked sessions are ten thousand heap nodes and
// epoll registrations, nothing more.
//
// The owner's rules:
// - arm() and disarm() of one entry are not called concurrently with each
//   other (its owner serialises them; the session calls both from its run()
//   or its teardown). Different entries: any threads, any time.
// - An fd belongs to one entry; it stays registered with epoll between arms
//   (re-arming it is a cheap EPOLL_CTL_MOD) until disarm() or an arm with
//   another fd, so the owner disarms before it closes the fd.
// - The wake function is quick and does not block (Pool::wake); it may call
//   arm() and disarm(), of any entry, its own included.
// - The reactor outlives its armed entries' use: destroying it drops every
//   arm (none fires); disarm() must not be called after that. The Pool (or
//   whatever the wake function reaches) outlives the reactor.
#ifndef DSS_CORE_REACTOR_HPP
#define DSS_CORE_REACTOR_HPP

#include "clock.hpp"
#include "ready_set.hpp"
#include "timer_heap.hpp"

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dss {

class Pool;
class Runnable;

class Reactor {
 public:
  using WakeFn = void (*)(void* ctx, Runnable* r);
  static constexpr std::uint32_t kNoSlot = ~std::uint32_t(0);

  // The registration of one runnable, embedded by its owner (the session).
  // Its fields belong to the reactor, under its lock.
  class Entry : private TimerNode {
   public:
    explicit Entry(Runnable* r) : r_(r) {}
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    Runnable* runnable() const { return r_; }

   private:
    friend class Reactor;
    enum Fire : unsigned char { kIdle, kQueued, kCalling };
    Runnable* const r_;
    int fd_ = -1;                 // registered with epoll, or -1
    std::uint32_t slot_ = kNoSlot;  // in slots_ while fd_ >= 0
    std::uint32_t gen_ = 0;       // this arm's number: tells stale reports
    bool armed_ = false;          // an arm that has not fired
    Fire fire_ = kIdle;           // fired: waiting for, or in, its wake call
    Entry* prev_ = nullptr;       // the fire queue, while kQueued
    Entry* next_ = nullptr;
  };

  // Wakes through fn(ctx, runnable); or through pool->wake(runnable).
  Reactor(WakeFn fn, void* ctx);
  explicit Reactor(Pool* pool);
  // Stops and joins the thread; never from a wake call (aborts).
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // One-shot arm of e, from any thread: wake its runnable once, at
  // `deadline` (Clock::time_point::max(): none) or when fd (>= 0; -1: none)
  // is readable (or in error, or hung up), whichever comes first. Replaces
  // e's previous arm. Starts the reactor's thread on first use. 0, or an
  // errno (e is unarmed then): the thread or kernel objects could not be
  // made, ENOMEM, or epoll_ctl's (EBADF, EPERM for a regular file, EEXIST
  // for an fd of another entry; ENOSYS for any fd off Linux).
  int arm(Entry* e, Clock::time_point deadline, int fd);
  // Forgets e's arm, from any thread, a wake call or e's own run()
  // included; waits for a wake call of e under way on another thread. Once
  // it returned, the reactor never touches e again (until armed again).
  void disarm(Entry* e);

  // Entries with a deadline queued (armed, not fired); for tests.
  std::size_t timers() const;

 private:
  static Entry* entry(TimerNode* n) { return static_cast<Entry*>(n); }

  int start_locked();
  int watch_locked(Entry* e, int fd);
  int acquire_slot_locked(Entry* e);
  void unwatch_locked(Entry* e);
  void unarm_locked(Entry* e);
  void queue_locked(Entry* e);
  void unqueue_locked(Entry* e);
  void loop();
  void collect_locked(const std::uint64_t* keys, int n);
  void fire_all(std::unique_lock<std::mutex>& lock);
  bool on_thread() const;

  WakeFn wake_;
  void* ctx_;
  mutable std::mutex mu_;
  std::condition_variable called_;  // a wake call ended (disarm waits)
  unsigned waiters_ = 0;             // disarms waiting on called_
  ReadySet set_;
  std::thread thread_;
  bool started_ = false;
  bool stop_ = false;
  TimerHeap heap_;
  std::vector<Entry*> slots_;       // entries with an fd, by slot
  std::vector<std::uint32_t> free_;  // free slots; capacity >= slots_.size()
  std::uint32_t gen_ = 0;
  Entry* head_ = nullptr;            // the fire queue
  Entry* tail_ = nullptr;
  Entry* calling_ = nullptr;         // whose wake call is under way
  // The reactor sleeps until this (min() while awake); an arm with an
  // earlier deadline interrupts it, once (poked_) until it wakes.
  Clock::time_point sleep_until_ = Clock::time_point::min();
  bool poked_ = false;
};

}  // namespace dss

#endif  // DSS_CORE_REACTOR_HPP
