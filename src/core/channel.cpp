// channel.cpp -- see channel.hpp.
//
// Completing an operation against a waiting one takes both suspensions
// from waiting to busy, then both to ended (or, if the other could not be
// had, our own back to waiting). Two parties may each hold their own
// suspension busy while trying to take the other's (each a choice waiting
// on two channels, completed from both ends at once). The tie is broken by
// address: the party whose suspension has the higher address lets go of
// its own and retries, the lower one keeps it and waits, so a chain of
// waits only ever climbs and ends. Nobody holding a suspension busy waits
// for a lock, so spinning under a channel lock cannot deadlock.
#include "channel.hpp"

#include <functional>
#include <new>
#include <thread>

namespace dss {

namespace {

void pause(unsigned* spins) {
  if (++*spins > 64) std::this_thread::yield();
}

enum class Sync { ok, theirs_gone, mine_gone };

// Takes mine (if any) and theirs from waiting to busy; see the top.
Sync sync(Suspension* mine, Suspension* theirs) {
  bool held = false;
  for (unsigned spins = 0;; pause(&spins)) {
    if (mine && !held) {
      Suspension::Begin b = mine->begin();
      if (b == Suspension::Begin::gone) return Sync::mine_gone;
      if (b == Suspension::Begin::busy) continue;  // another party is ending it
      held = true;
    }
    Suspension::Begin t = theirs->begin();
    if (t == Suspension::Begin::got) return Sync::ok;
    if (t == Suspension::Begin::gone) {
      if (held) mine->abort();
      return Sync::theirs_gone;
    }
    if (held && std::less<Suspension*>()(theirs, mine)) {
      mine->abort();  // the higher address backs off
      held = false;
      // ...holding nothing until the other is settled, so that the lower
      // one can take ours meanwhile.
      for (unsigned n = 0; theirs->busy(); pause(&n)) {
      }
    }
  }
}

// Takes our own suspension to busy: false when another party ended it.
bool claim_self(Suspension* mine) {
  for (unsigned spins = 0;; pause(&spins)) {
    Suspension::Begin b = mine->begin();
    if (b == Suspension::Begin::got) return true;
    if (b == Suspension::Begin::gone) return false;
  }
}

}  // namespace

// --- Suspension ----------------------------------------------------------------

Suspension* Suspension::create(WakeFn fn, void* ctx, bool early) {
  return new (std::nothrow) Suspension(fn, ctx, early);
}

void Suspension::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

Suspension::Begin Suspension::begin() {
  int s = kWaiting;
  if (state_.compare_exchange_strong(s, kBusy, std::memory_order_acquire)) return Begin::got;
  return s == kBusy ? Begin::busy : Begin::gone;
}

void Suspension::finish(End how, int index) {
  index_ = index;
  int s = how == End::done ? kDone : how == End::closed ? kClosed : kCancelled;
  state_.store(s, std::memory_order_release);
}

void Suspension::abort() { state_.store(kWaiting, std::memory_order_release); }

bool Suspension::cancel() {
  for (unsigned spins = 0;; pause(&spins)) {
    int s = kWaiting;
    if (state_.compare_exchange_strong(s, kCancelled, std::memory_order_acq_rel)) return true;
    if (s != kBusy) return false;
  }
}

void Suspension::quiesce() const {
  for (unsigned spins = 0; waking_.load(std::memory_order_acquire);) pause(&spins);
}

Suspension::End Suspension::end() const {
  switch (state_.load(std::memory_order_acquire)) {
    case kDone: return End::done;
    case kClosed: return End::closed;
    case kCancelled: return End::cancelled;
    default: return End::none;
  }
}

// --- Channel -------------------------------------------------------------------

void Channel::List::push(Waiter* w) {
  w->prev = tail;
  w->next = nullptr;
  if (tail) tail->next = w;
  else head = w;
  tail = w;
  w->linked = true;
}

void Channel::List::remove(Waiter* w) {
  if (w->prev) w->prev->next = w->next;
  else head = w->next;
  if (w->next) w->next->prev = w->prev;
  else tail = w->prev;
  w->prev = w->next = nullptr;
  w->linked = false;
}

Channel* Channel::create(std::size_t capacity) {
  return new (std::nothrow) Channel(capacity);
}

void Channel::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

// The first waiter of l that can be completed for mine (nullptr: an
// operation with no suspension of its own), skipping `skip`'s own
// waiters; both suspensions are then busy and the waiter is off the list.
// Waiters whose suspension ended elsewhere are dropped on the way.
Waiter* Channel::match_locked(List& l, Suspension* mine, Suspension* skip,
                              bool* mine_gone) {
  for (Waiter* w = l.head; w;) {
    Waiter* next = w->next;
    if (w->susp != mine && w->susp != skip) {
      Sync r = sync(mine, w->susp);
      if (r == Sync::mine_gone) {
        *mine_gone = true;
        return nullptr;
      }
      l.remove(w);
      if (w->put) --putters_n_;
      if (r == Sync::ok) return w;
    }
    w = next;
  }
  return nullptr;
}

// A completed waiter's suspension, referenced for its wake() after the
// lock is let go.
Suspension* Channel::ended(Waiter* w, Suspension::End how) {
  Suspension* s = w->susp;
  s->ref();
  s->waking();  // before the end shows
  s->finish(how, w->index);
  return s;
}

Channel::Res Channel::put_locked(Message& m, Suspension* mine, int index, Suspension** woken) {
  if (closed_) return (!mine || claim_self(mine)) ? finish_self(mine, Res::closed, index)
                                                  : Res::blocked;
  bool gone = false;
  if (Waiter* g = match_locked(getters_, mine, nullptr, &gone)) {
    g->susp->message() = std::move(m);  // a get waits only on an empty buffer
    *woken = ended(g, Suspension::End::done);
    return finish_self(mine, Res::done, index);
  }
  if (gone || !room_locked() || (mine && !claim_self(mine))) return Res::blocked;
  try {
    buf_.push_back(std::move(m));
  } catch (const std::bad_alloc&) {
    if (mine) mine->abort();
    return Res::nomem;
  }
  return finish_self(mine, Res::done, index);
}

Channel::Res Channel::get_locked(Message* out, Suspension* mine, int index, Suspension** woken) {
  bool gone = false;
  if (!buf_.empty()) {
    if (mine && !claim_self(mine)) return Res::blocked;
    *out = std::move(buf_.front());
    buf_.pop_front();
    // Ours ends before the refill: a put's owner holding its own busy
    // while it waits for ours must find ours ended, not busy.
    Res r = finish_self(mine, Res::done, index);
    refill_locked(mine, woken);
    return r;
  }
  Waiter* p = closed_ ? nullptr : match_locked(putters_, mine, nullptr, &gone);
  if (p) {  // a rendezvous
    *out = std::move(p->msg);
    *woken = ended(p, Suspension::End::done);
    return finish_self(mine, Res::done, index);
  }
  if (gone || !closed_) return Res::blocked;
  return (!mine || claim_self(mine)) ? finish_self(mine, Res::closed, index) : Res::blocked;
}

// Ends our own (busy) suspension as r says, when there is one.
Channel::Res Channel::finish_self(Suspension* mine, Res r, int index) {
  if (mine)
    mine->finish(r == Res::done ? Suspension::End::done : Suspension::End::closed, index);
  return r;
}

// A get made room: the oldest waiting put (not of the get's own choice)
// moves its message into the buffer and completes.
void Channel::refill_locked(Suspension* skip, Suspension** woken) {
  // Closed: the puts still waiting end closed (close() may be part-way).
  if (closed_ || !room_locked() || !putters_.head) return;
  try {
    buf_.emplace_back();  // the slot first: nothing to undo if it fails
  } catch (const std::bad_alloc&) {
    return;  // the puts stay waiting
  }
  bool gone = false;
  Waiter* p = match_locked(putters_, nullptr, skip, &gone);
  if (!p) {
    buf_.pop_back();
    return;
  }
  buf_.back() = std::move(p->msg);
  *woken = ended(p, Suspension::End::done);
}

Channel::Res Channel::put_now(Message& m, Suspension* mine, int index) {
  Suspension* woken = nullptr;
  Res r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r = put_locked(m, mine, index, &woken);
  }
  wake_and_drop(woken);
  return r;
}

Channel::Res Channel::get_now(Message* out, Suspension* mine, int index) {
  Suspension* woken = nullptr;
  Res r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r = get_locked(out, mine, index, &woken);
  }
  wake_and_drop(woken);
  return r;
}

void Channel::give_back(Message& m) {
  Suspension* woken = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool gone = false;
    // Gets wait only on an empty buffer: one waiting takes it now.
    if (Waiter* g = match_locked(getters_, nullptr, nullptr, &gone)) {
      g->susp->message() = std::move(m);
      woken = ended(g, Suspension::End::done);
    } else {
      try {
        buf_.push_front(std::move(m));
      } catch (const std::bad_alloc&) {
      }
    }
  }
  wake_and_drop(woken);
}

void Channel::wake_and_drop(Suspension* s) {
  if (!s) return;
  s->wake();
  s->unref();
}

// Whether s still waits; a suspension some party holds busy is waited for
// (that party either ends it or lets it go).
static bool still_waiting(Suspension* s) {
  for (unsigned spins = 0;; pause(&spins)) {
    Suspension::Begin b = s->begin();
    if (b == Suspension::Begin::got) {
      s->abort();
      return true;
    }
    if (b == Suspension::Begin::gone) return false;
  }
}

Channel::Res Channel::wait(Waiter* w, bool put) {
  Suspension* woken = nullptr;
  Res r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    w->put = put;
    r = put ? put_locked(w->msg, w->susp, w->index, &woken)
            : get_locked(&w->susp->message(), w->susp, w->index, &woken);
    if (r == Res::blocked && still_waiting(w->susp)) {
      (put ? putters_ : getters_).push(w);
      if (put) ++putters_n_;
    }
  }
  wake_and_drop(woken);
  return r;
}

Channel::Res Channel::put_wait(Waiter* w) { return wait(w, true); }
Channel::Res Channel::get_wait(Waiter* w) { return wait(w, false); }

void Channel::unwait(Waiter* w) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!w->linked) return;
  (w->put ? putters_ : getters_).remove(w);
  if (w->put) --putters_n_;
}

// Ends the waiters a batch at a time: after the lock is let go a waiter
// may be freed by its owner, so only their suspensions are kept.
void Channel::close() {
  for (;;) {
    Suspension* batch[32];
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      for (List* l : {&getters_, &putters_}) {
        while (n < 32) {
          bool gone = false;
          Waiter* w = match_locked(*l, nullptr, nullptr, &gone);
          if (!w) break;
          batch[n++] = ended(w, Suspension::End::closed);
        }
      }
    }
    for (int i = 0; i < n; ++i) wake_and_drop(batch[i]);
    if (n < 32) return;
  }
}

bool Channel::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

std::size_t Channel::len() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buf_.size() + putters_n_;
}

}  // namespace dss
