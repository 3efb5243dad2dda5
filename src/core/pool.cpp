// pool.cpp -- the session thread pool: see pool.hpp.
#include "pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <system_error>

namespace dss {

namespace {
thread_local Pool* t_pool = nullptr;  // the pool whose thread this is
}

Pool::Pool(unsigned min, unsigned max) : min_(0), max_(0) {
  set_limits(min, max);
}

// On one of its own threads the pool cannot be joined, and must not be
// freed under them: a bug of the session layer, stopped here.
Pool::~Pool() {
  if (t_pool == this) std::abort();
  close();
}

Pool* Pool::current() { return t_pool; }

bool Pool::wake(Runnable* r) {
  int s = r->pstate_.load(std::memory_order_acquire);
  for (;;) {
    switch (s) {
      case Runnable::kParked:
        if (r->pstate_.compare_exchange_weak(s, Runnable::kQueued, std::memory_order_acq_rel))
          return push(r);
        break;
      case Runnable::kRunning:
        // Its thread queues it again after the run (ran()).
        if (r->pstate_.compare_exchange_weak(s, Runnable::kWoken, std::memory_order_acq_rel))
          return true;
        break;
      case Runnable::kQueued:
      case Runnable::kWoken:
        return true;  // it will run: once is enough
      default:
        return false;  // done
    }
  }
}

bool Pool::push(Runnable* r) {
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_) {
      // Nobody would run it: it stays parked.
      r->pstate_.store(Runnable::kParked, std::memory_order_release);
      return false;
    }
    notify = push_locked(r);
  }
  // After the unlock: a thread woken under the lock would only sleep again
  // on it, and the waker pay a second futex call to let it in.
  if (notify) cv_.notify_one();
  return true;
}

// A thread is started when the queue holds more tasks than there are idle
// threads to take them: every thread is busy, maybe stuck in a blocking C
// call, and the task would otherwise wait for one of them.
// Queues r; true when an idle thread should be notified (the caller does,
// after unlocking).
bool Pool::push_locked(Runnable* r) {
  r->next_ = nullptr;
  if (tail_) tail_->next_ = r;
  else head_ = r;
  tail_ = r;
  ++queued_;
  if (queued_ > idle_ && alive_ < max_ && start_locked()) return false;
  return idle_ > 0;
}

Runnable* Pool::pop_locked() {
  Runnable* r = head_;
  head_ = r->next_;
  if (!head_) tail_ = nullptr;
  r->next_ = nullptr;
  --queued_;
  return r;
}

bool Pool::start_locked() {
  reap_locked();
  Worker* w = new (std::nothrow) Worker;
  if (!w) return false;
  try {
    workers_.reserve(workers_.size() + 1);  // the push below cannot throw
    w->thread = std::thread(&Pool::loop, this, w);
  } catch (...) {  // std::system_error, std::bad_alloc
    delete w;  // no thread: the ones alive take the work
    return false;
  }
  workers_.push_back(w);
  peak_ = std::max(peak_, ++alive_);
  return true;
}

// Joins the threads that retired. Under the lock: an exited thread set its
// flag as the last thing it did under the lock, so joining it waits only
// for its return, never for the lock.
void Pool::reap_locked() {
  auto gone = std::stable_partition(workers_.begin(), workers_.end(),
                                    [](Worker* w) { return !w->exited; });
  for (auto it = gone; it != workers_.end(); ++it) {
    (*it)->thread.join();
    delete *it;
  }
  workers_.erase(gone, workers_.end());
}

void Pool::loop(Worker* self) {
  t_pool = this;
  std::unique_lock<std::mutex> lock(mu_);
  while (wait_for_work(lock)) {
    Runnable* r = pop_locked();
    lock.unlock();
    // Queued -> running: only this thread moves it from queued.
    r->pstate_.store(Runnable::kRunning, std::memory_order_release);
    ran(r, r->run());
    lock.lock();
  }
  --alive_;
  self->exited = true;
  gone_.notify_all();
}

// Waits for a queued task: true with one at the head, false when this
// thread should end (closing with the queue empty, or idle too long above
// the minimum).
bool Pool::wait_for_work(std::unique_lock<std::mutex>& lock) {
  while (!head_) {
    if (closing_) return false;
    ++idle_;
    bool timed_out = false;
    if (alive_ > min_)
      timed_out = cv_.wait_for(lock, idle_retire_) == std::cv_status::timeout;
    else
      cv_.wait(lock);
    --idle_;
    if (timed_out && !head_ && alive_ > min_) return false;
  }
  return true;
}

void Pool::ran(Runnable* r, Runnable::After after) {
  if (after == Runnable::After::done) {
    r->pstate_.store(Runnable::kDone, std::memory_order_release);
    r->finished();  // the last touch
    return;
  }
  int s = Runnable::kRunning;
  if (r->pstate_.compare_exchange_strong(s, Runnable::kParked, std::memory_order_acq_rel))
    return;
  // Woken while it ran: run it again (after the tasks queued meanwhile).
  // Even when closing: this thread is alive to run it.
  r->pstate_.store(Runnable::kQueued, std::memory_order_release);
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    notify = push_locked(r) && queued_ > 1;  // alone in the queue: this thread takes it next
  }
  if (notify) cv_.notify_one();
}

void Pool::set_limits(unsigned min, unsigned max) {
  min = std::max(min, 1u);
  max = std::max(max, min);
  std::lock_guard<std::mutex> lock(mu_);
  min_ = min;
  max_ = max;
  while (!closing_ && alive_ < min_ && start_locked()) {
  }
  // A higher max: threads for what waits already (every thread busy).
  while (!closing_ && queued_ > idle_ && alive_ < max_ && start_locked()) {
  }
  cv_.notify_all();  // idle threads re-read the limits
}

void Pool::limits(unsigned* min, unsigned* max) const {
  std::lock_guard<std::mutex> lock(mu_);
  *min = min_;
  *max = max_;
}

void Pool::set_idle_retire(std::chrono::milliseconds d) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_retire_ = d;
  cv_.notify_all();
}

Pool::Counts Pool::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Counts{alive_, alive_ - idle_, peak_, queued_};
}

bool Pool::close() {
  if (t_pool == this) return false;  // it would wait for itself
  std::unique_lock<std::mutex> lock(mu_);
  closing_ = true;
  cv_.notify_all();
  gone_.wait(lock, [this] { return alive_ == 0; });
  reap_locked();
  return true;
}

}  // namespace dss
