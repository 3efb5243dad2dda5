// pool.hpp -- the OS threads that run sessions: a run queue of runnable
// tasks, and between min and max threads taking from it.
//
// A task (a session: a Lua state and its fibers) is run by one thread at a
// time, from the moment something wakes it until it has nothing left to do
// and parks. A parked task holds no thread: 10 000 idle sessions cost their
// memory, not 10 000 threads. Waking is cheap and idempotent: a task woken
// while queued stays queued once, and a task woken while it runs is run
// again as soon as it returns, so no wake-up is ever lost between "nothing
// to do" and "park".
//
// Threads: the pool starts `min` threads. A wake that finds every thread
// busy (running a task, or stuck in a blocking C call inside one) starts
// another, up to `max`, so a task that blocks its thread cannot starve the
// others; a thread idle for `idle_retire` while more than `min` exist ends.
#ifndef DSS_CORE_POOL_HPP
#define DSS_CORE_POOL_HPP

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace dss {

class Pool;

// Something the pool runs. The pool calls run() on one of its threads,
// never on two at once; after a run that returns `done`, it calls
// finished() and never touches the task again.
class Runnable {
 public:
  enum class After { park, done };
  virtual ~Runnable() = default;
  // Runs until there is nothing left to do: park (run again once woken; a
  // wake that came while it ran counts), or done (never again).
  virtual After run() = 0;
  // The pool's last touch of a task whose run returned done: the owner may
  // free it from here on.
  virtual void finished() {}

 private:
  friend class Pool;
  // parked -> queued -> running -> parked, or -> woken (woken while it
  // ran: queued again after the run), or -> done.
  enum : int { kParked, kQueued, kRunning, kWoken, kDone };
  std::atomic<int> pstate_{kParked};
  Runnable* next_ = nullptr;  // the run queue's link, under the pool's lock
};

class Pool {
 public:
  struct Counts {
    unsigned threads;  // alive now
    unsigned busy;     // running a task
    unsigned peak;     // most threads alive at once
    std::size_t queued;
  };

  // 1 <= min <= max (clamped so).
  Pool(unsigned min, unsigned max);
  ~Pool();  // close(); never on one of its own threads (aborts)
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Makes r runnable, from any thread: queued for a free thread, or run
  // again after its current run. False once the pool is closed, or once r
  // is done (nothing queued then).
  bool wake(Runnable* r);
  // New limits (clamped as above); threads come and go towards them.
  void set_limits(unsigned min, unsigned max);
  void limits(unsigned* min, unsigned* max) const;
  // How long a thread above the minimum stays idle before it ends.
  void set_idle_retire(std::chrono::milliseconds d);
  Counts counts() const;
  // Refuses new wakes of parked tasks, lets the threads run every queued
  // task (and those woken while running: a task that keeps waking itself
  // keeps close() waiting) until each parks or is done, then joins them.
  // The session layer cancels its sessions first, so that they end. False,
  // and nothing done, on one of the pool's own threads (it would wait for
  // itself).
  bool close();
  // The pool whose thread calls, or nullptr.
  static Pool* current();

 private:
  struct Worker {
    std::thread thread;
    bool exited = false;  // under mu_: only join() is left
  };

  bool push(Runnable* r);
  bool push_locked(Runnable* r);
  Runnable* pop_locked();
  bool start_locked();
  void reap_locked();
  void loop(Worker* self);
  bool wait_for_work(std::unique_lock<std::mutex>& lock);
  void ran(Runnable* r, Runnable::After after);

  mutable std::mutex mu_;
  std::condition_variable cv_;  // work queued, or closing
  std::condition_variable gone_;  // a thread exited (close waits)
  Runnable* head_ = nullptr;
  Runnable* tail_ = nullptr;
  std::size_t queued_ = 0;
  unsigned min_, max_;
  unsigned idle_ = 0;  // threads waiting for work
  unsigned alive_ = 0;
  unsigned peak_ = 0;
  std::chrono::milliseconds idle_retire_{2000};
  bool closing_ = false;
  std::vector<Worker*> workers_;  // every thread not yet joined
};

}  // namespace dss

#endif  // DSS_CORE_POOL_HPP
