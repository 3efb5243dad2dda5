// reactor.cpp -- see reactor.hpp.
//
// An entry's life, under the lock: armed (in the heap when it has a
// deadline; its fd enabled in epoll under the arm's key) -> fired (out of
// the heap, unarmed, on the fire queue: kQueued) -> called (kCalling: its
// wake runs, the lock let go) -> idle. Arming drops a queued fire of the
// previous arm; disarming drops a queued fire and waits out a call.
//
// Stale fd reports: epoll_wait hands back keys the reactor reads only
// after it took the lock, and meanwhile the entry may have been disarmed
// (and freed), fired by its timer, or armed again. So a key is not a
// pointer but a slot number and the arm's number (gen): the slot finds the
// entry still registered, or nothing; a gen that is not the entry's
// current arm's, or an entry no longer armed, is a report of an arm that
// is over, and dropped.
#include "reactor.hpp"

#include "pool.hpp"

#include <cerrno>
#include <cstdlib>
#include <new>

namespace dss {

namespace {

void pool_wake(void* ctx, Runnable* r) { static_cast<Pool*>(ctx)->wake(r); }

std::uint64_t key_of(std::uint32_t slot, std::uint32_t gen) {
  return (std::uint64_t(gen) << 32) | slot;
}

}  // namespace

Reactor::Reactor(WakeFn fn, void* ctx) : wake_(fn), ctx_(ctx) {}

Reactor::Reactor(Pool* pool) : Reactor(pool_wake, pool) {}

// A wake call cannot join its own thread: a bug of the owner, stopped here.
Reactor::~Reactor() {
  bool started;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (on_thread()) std::abort();
    stop_ = true;
    started = started_;
  }
  if (!started) return;
  set_.interrupt();
  thread_.join();
}

bool Reactor::on_thread() const { return thread_.get_id() == std::this_thread::get_id(); }

std::size_t Reactor::timers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return heap_.size();
}

// The deadline is set last: the heap is the only step that can fail after
// epoll's, and unarming undoes both. An earlier deadline than the one the
// thread sleeps towards interrupts it, after the lock is let go.
int Reactor::arm(Entry* e, Clock::time_point deadline, int fd) {
  bool poke = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int err = start_locked();
    if (err == 0) {
      if (e->fire_ == Entry::kQueued) unqueue_locked(e);  // the previous arm's
      e->gen_ = ++gen_;
      err = watch_locked(e, fd);
    }
    if (err == 0) {
      try {
        if (deadline == Clock::time_point::max()) heap_.remove(e);
        else heap_.set(e, deadline);
      } catch (const std::bad_alloc&) {
        err = ENOMEM;
      }
    }
    if (err != 0) {
      unarm_locked(e);
      return err;
    }
    e->armed_ = true;
    if (deadline < sleep_until_ && !poked_) poke = poked_ = true;
  }
  if (poke) set_.interrupt();
  return 0;
}

void Reactor::disarm(Entry* e) {
  std::unique_lock<std::mutex> lock(mu_);
  unarm_locked(e);
  if (e->fire_ == Entry::kQueued) unqueue_locked(e);
  if (e->fire_ != Entry::kCalling) return;
  if (on_thread()) {
    // From e's own wake call (the only call under way): the thread must
    // not touch e once the call returns.
    calling_ = nullptr;
    e->fire_ = Entry::kIdle;
    return;
  }
  ++waiters_;
  called_.wait(lock, [e] { return e->fire_ != Entry::kCalling; });
  --waiters_;
}

int Reactor::start_locked() {
  if (started_) return 0;
  int err = set_.open();
  if (err != 0) return err;
  try {
    thread_ = std::thread(&Reactor::loop, this);
  } catch (...) {  // std::system_error
    return EAGAIN;
  }
  started_ = true;
  return 0;
}

// e's fd for this arm: the same fd enabled again under the new key (one
// epoll_ctl), another fd registered instead of the old one, or none.
int Reactor::watch_locked(Entry* e, int fd) {
  if (e->fd_ >= 0 && e->fd_ != fd) unwatch_locked(e);
  if (fd < 0) return 0;
  bool known = e->fd_ >= 0;
  if (!known) {
    int err = acquire_slot_locked(e);
    if (err != 0) return err;
  }
  int err = set_.watch(fd, key_of(e->slot_, e->gen_), known);
  if (err != 0 && !known) {
    // Not registered (maybe another entry's fd: EEXIST): nothing to delete.
    slots_[e->slot_] = nullptr;
    free_.push_back(e->slot_);
    e->slot_ = kNoSlot;
    return err;
  }
  e->fd_ = fd;  // on a failed re-enable too: unarming deletes it
  return err;
}

// free_ keeps room for every slot, so that giving one back never
// allocates (unwatch_locked cannot fail).
int Reactor::acquire_slot_locked(Entry* e) {
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    if (slots_.size() >= kNoSlot) return ENOMEM;
    try {
      if (free_.capacity() < slots_.size() + 1) free_.reserve(2 * (slots_.size() + 1));
      slots_.push_back(nullptr);
    } catch (const std::bad_alloc&) {
      return ENOMEM;
    }
    slot = std::uint32_t(slots_.size() - 1);
  }
  slots_[slot] = e;
  e->slot_ = slot;
  return 0;
}

void Reactor::unwatch_locked(Entry* e) {
  if (e->fd_ < 0) return;
  set_.unwatch(e->fd_);
  slots_[e->slot_] = nullptr;
  free_.push_back(e->slot_);
  e->slot_ = kNoSlot;
  e->fd_ = -1;
}

void Reactor::unarm_locked(Entry* e) {
  heap_.remove(e);
  unwatch_locked(e);
  e->armed_ = false;
}

void Reactor::queue_locked(Entry* e) {
  e->fire_ = Entry::kQueued;
  e->next_ = nullptr;
  e->prev_ = tail_;
  if (tail_) tail_->next_ = e;
  else head_ = e;
  tail_ = e;
}

void Reactor::unqueue_locked(Entry* e) {
  if (e->prev_) e->prev_->next_ = e->next_;
  else head_ = e->next_;
  if (e->next_) e->next_->prev_ = e->prev_;
  else tail_ = e->prev_;
  e->prev_ = e->next_ = nullptr;
  e->fire_ = Entry::kIdle;
}

// The one sleep: until the earliest deadline, an fd, or an interrupt (an
// earlier deadline armed, or the end).
void Reactor::loop() {
  std::uint64_t keys[ReadySet::kBatch];
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    Clock::time_point until =
        heap_.empty() ? Clock::time_point::max() : heap_.top()->deadline;
    sleep_until_ = until;
    lock.unlock();
    int n = set_.wait(until, keys);
    lock.lock();
    sleep_until_ = Clock::time_point::min();
    poked_ = false;
    collect_locked(keys, n);
    fire_all(lock);
  }
}

// Fires the entries whose fd was reported (when the report is of their
// current arm) and those whose deadline passed.
void Reactor::collect_locked(const std::uint64_t* keys, int n) {
  auto fired = [this](Entry* e) {
    heap_.remove(e);
    e->armed_ = false;  // its fd stays registered, disabled or stale
    if (e->fire_ != Entry::kQueued) queue_locked(e);
  };
  for (int i = 0; i < n; ++i) {
    std::uint32_t slot = std::uint32_t(keys[i]);
    std::uint32_t gen = std::uint32_t(keys[i] >> 32);
    Entry* e = slot < slots_.size() ? slots_[slot] : nullptr;
    if (e && e->gen_ == gen && e->armed_) fired(e);
  }
  Clock::time_point now = Clock::now();
  while (!heap_.empty() && heap_.top()->deadline <= now) fired(entry(heap_.top()));
}

// Each wake is called with the lock let go: it may arm or disarm (a
// queued entry disarmed meanwhile is no longer on the queue; one disarmed
// from its own call is no longer calling_, and not touched again).
void Reactor::fire_all(std::unique_lock<std::mutex>& lock) {
  while (head_ && !stop_) {
    Entry* e = head_;
    unqueue_locked(e);
    e->fire_ = Entry::kCalling;
    calling_ = e;
    Runnable* r = e->r_;
    lock.unlock();
    wake_(ctx_, r);
    lock.lock();
    if (calling_ == e) e->fire_ = Entry::kIdle;
    calling_ = nullptr;
    if (waiters_ != 0) called_.notify_all();
  }
}

}  // namespace dss
