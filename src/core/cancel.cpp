// cancel.cpp -- items ending by cancellation: unreg (one registration's
// items), a producer's timeout (expire in deliver.cpp), and close
// (every item, then every client).
#include "hub.hpp"

namespace dss {

int Hub::unreg(void* utilid) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = ids::find(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  int rc = hub->unreg_local(id);
  if (rc == DSS_SUCCESS) ids::release(id);  // its items have all ended
  return rc;
}

int Hub::unreg_local(std::uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    if (!ids::live_locked(id, this)) return DSS_ERR_INVALID_UTILID;
    ids::retire_locked(id);
    for (std::size_t i = 0; i < regs_.size(); ++i) {
      if (regs_[i].id == id) {
        regs_.erase(regs_.begin() + std::ptrdiff_t(i));
        break;
      }
    }
    ref();  // ours until its items ended
    room_cv_.notify_all();  // its producers waiting for room give up
  }
  // From here on nothing of id can be queued or parked: end what is, then
  // wait for a callback of id the Lua thread may be running.
  cancel_items(id);
  lua_.quiesce(id, &Hub::ending, this);
  unref();
  return DSS_SUCCESS;
}

long Hub::queued(void* utilid) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = ids::find(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  std::lock_guard<std::mutex> lock(hub->q_.mu);
  if (!ids::live_locked(id, hub)) return DSS_ERR_INVALID_UTILID;
  return hub->q_.count_locked(id);
}

void Hub::after_kills_locked(std::size_t killed) {
  if (q_.kills_locked(killed)) notify_.reset_locked();  // empty for sure
  if (room_waiters_.load(std::memory_order_relaxed)) room_cv_.notify_all();
}

// No allocation on this path: a bounded batch at a time, the queue's walk
// resuming where the last batch stopped, then the parked items.
void Hub::cancel_items(std::uint64_t id) {
  constexpr std::size_t kBatch = 64;
  Taken batch[kBatch];
  Ending e;
  Queue::Cursor cursor;
  for (;;) {
    std::size_t n;
    bool more;
    {
      std::lock_guard<std::mutex> lock(q_.mu);
      std::size_t killed = q_.kill_walk_locked(id, &cursor, batch, kBatch, &more);
      for (std::size_t k = 0; k < killed; ++k)
        if (batch[k].blk) move(*batch[k].blk, St::queued, St::cancelling);
      n = killed;
      if (!more) n += take_parked_locked(id, batch + n, kBatch - n, &more);
      if (killed) after_kills_locked(killed);
      add_ending_locked(&e, batch, n);
    }
    for (std::size_t k = 0; k < n; ++k) end_by_cancel(batch[k], false, &e);
    if (!more) return;
  }
}

// Under the lock: takes the parked items of id (all when id == 0) back
// from their tickets, at most room of them (*more when it stopped for room).
std::size_t Hub::take_parked_locked(std::uint64_t id, Taken* out,
                                    std::size_t room, bool* more) {
  std::size_t n = 0;
  for (std::size_t k = 0; tickets_.parked() && k < tickets_.slots(); ++k) {
    Blocking* p = tickets_.at(k);
    if (!p || (id && p->id != id)) continue;
    if (n == room) {
      *more = true;
      break;
    }
    tickets_.drop(p->ticket);  // the Lua side's call becomes a no-op
    move(*p, St::parked, St::cancelling);
    out[n++] = Taken{p->id, nullptr, p->data, p, 0};  // decoded: through ret
  }
  return n;
}

void Hub::add_ending_locked(Ending* e, const Taken* items, std::size_t n) {
  if (n == 0) return;
  *e = Ending{items, n, 0, my_tag(), endings_};
  endings_ = e;
}

bool Hub::ending(const void* hub, std::uint64_t id) {
  const Hub* h = static_cast<const Hub*>(hub);
  std::uintptr_t me = my_tag();
  for (const Ending* e = h->endings_; e; e = e->link) {
    if (e->thread == me) continue;  // unreg from inside one of its callbacks
    for (std::size_t k = e->next; k < e->n; ++k)
      if (e->items[k].id == id) return true;
  }
  return false;
}

void Hub::end_by_cancel(const Taken& t, bool timed_out, Ending* e) {
  if (t.decode) ids::invoke_decode(t.id, t.decode, nullptr, t.data);
  else ids::invoke_ret(t.id, t.blk->ret, nullptr, t.data, 0);
  // A blocking record lives on its producer's stack: ending it is the last
  // thing done to it.
  Signal::Wake wake;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    if (e && ++e->next == e->n) {
      Ending** p = &endings_;
      while (*p != e) p = &(*p)->link;
      *p = e->link;
      lua_.changed_locked();
    }
    ++(timed_out ? timedout_ : cancelled_);
    if (Blocking* b = t.blk) {
      b->cancelled = !timed_out;
      move(*b, St::cancelling, St::done);
      wake = b->sig.end();
    }
  }
  wake.send();
}

void Hub::close(CancelCall call, void* ctx) {
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    if (state() != State::running) return;
    state_.store(State::closing, std::memory_order_release);
    room_cv_.notify_all();
    notify_.cv.notify_all();
  }
  // Cancel the items first: none can be taken any more, and a client whose
  // cancel waits for its producers must not wait on us.
  cancel_items(0);
  cancel_clients(call, ctx);
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    state_.store(State::closed, std::memory_order_release);
  }
  // Nothing can have been queued or parked since (the state is closing),
  // but make sure of it.
  cancel_items(0);
  std::lock_guard<std::mutex> lock(q_.mu);
  notify_.close_fd_locked();
}

// Cancels the clients one at a time, without copying the list (no
// allocation on this path). Each registration is cancelled once: the flag
// also covers one that another thread is unregistering right now (it has
// left the id table but not yet our list).
void Hub::cancel_clients(CancelCall call, void* ctx) {
  for (;;) {
    std::uint64_t id = 0;
    DSS_cancel_1v0_t cancel = nullptr;
    {
      std::lock_guard<std::mutex> lock(q_.mu);
      for (Registration& r : regs_) {
        if (!r.cancelled) {
          r.cancelled = true;
          id = r.id;
          cancel = r.cancel;
          break;
        }
      }
    }
    if (!cancel) return;
    void* utilid = to_utilid(id);
    if (call) call(ctx, cancel, utilid);
    else call_cancel(cancel, utilid);
    unreg(utilid);  // INVALID_UTILID here just means the client did it
  }
}

}  // namespace dss
