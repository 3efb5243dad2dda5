// deliver.cpp -- the delivery path, for every entry point: look the id up,
// admit the item, wait for room, append it, publish it (wake the Lua
// thread, send the datagram) -- each a small step under the hub's lock but
// the last -- and, for a blocking item, wait for it to end.
#include "hub.hpp"

namespace dss {

int Hub::deliver(void* utilid, DSS_decoder_1v0_t decode, DSS_return_1v0_t ret,
                 void* data) {
  return deliver2_(utilid, decode, ret, data, 0, -1, false);
}

int Hub::deliver2(void* utilid, DSS_decoder_1v0_t decode, DSS_return_1v0_t ret,
                  void* data, unsigned flags, long timeout_ms) {
  return deliver2_(utilid, decode, ret, data, flags, timeout_ms, true);
}

int Hub::deliver_internal(void* utilid, DSS_decoder_1v0_t decode, void* data) {
  Request rq{id_of(utilid), decode, nullptr, data, 0, -1, false, false, {}};
  rq.unbounded = true;
  Hub* hub = ids::find(rq.id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  if (!decode) return DSS_ERR_NO_DECODE_PROVIDED;
  if (rq.id & kCtxIdBit) return DSS_ERR_INVALID_ARGUMENT;
  return hub->deliver_ff(rq);
}

int Hub::deliverc(void* utilid, DSS_decoder_2v0_t decode, DSS_return_2v0_t ret,
                  void* data, unsigned flags, long timeout_ms) {
  return deliver2_(utilid, ids::fn_cast<DSS_decoder_1v0_t>(decode),
                   ids::fn_cast<DSS_return_1v0_t>(ret), data, flags,
                   timeout_ms, true, true);
}

int Hub::deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                   DSS_return_1v0_t ret, void* data, unsigned flags,
                   long timeout_ms, bool v2, bool ctx) {
  Request rq{id_of(utilid), decode, ret, data, flags, timeout_ms, v2, false, {}};
  // No lock and nothing written: the hub may be closed or recycled by the
  // time we lock it, which admit_locked finds out.
  Hub* hub = ids::find(rq.id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  if (!decode) return DSS_ERR_NO_DECODE_PROVIDED;
  if (v2 && (flags & ~unsigned(DSS_DELIVER_NOWAIT))) return DSS_ERR_INVALID_ARGUMENT;
  // The callbacks' types must be the registration's.
  if (bool(rq.id & kCtxIdBit) != ctx) return DSS_ERR_INVALID_ARGUMENT;
  rq.timed = deadline_ms(timeout_ms, &rq.deadline);
  return ret ? hub->deliver_blocking(rq) : hub->deliver_ff(rq);
}

// Under the lock: whether the item may be queued at all.
int Hub::admit_locked(const Request& rq) {
  if (state() != State::running) return DSS_ERR_NOT_STARTED;
  if (!ids::live_locked(rq.id, this)) return DSS_ERR_INVALID_UTILID;
  if (rq.ret && lua_.would_deadlock(rq.timed)) return DSS_ERR_WOULD_DEADLOCK;
  return DSS_SUCCESS;
}

// Under the lock: whether there is room; kMustWait when it is full and the
// item may wait for room (1v0 always; 2v0 unless told not to).
int Hub::room_locked(const Request& rq) {
  if (!max_ || q_.size() < max_ || rq.unbounded) return DSS_SUCCESS;
  if ((rq.flags & DSS_DELIVER_NOWAIT) || rq.timeout_ms == 0) {
    ++rejected_;
    return DSS_ERR_QUEUE_FULL;
  }
  if (lua_.would_deadlock(rq.timed)) return DSS_ERR_WOULD_DEADLOCK;
  return kMustWait;
}

// Waits (under the lock) until there is room, the registration or the hub
// went away, or the deadline passed.
int Hub::wait_room(std::unique_lock<std::mutex>& lock, const Request& rq) {
  blocked_.fetch_add(1, std::memory_order_relaxed);
  // seq_cst: ordered with the consumer's read-modify-write in flush_room
  // (it stores its count of items taken, then looks for us; we count
  // ourselves, then read its count): one of the two sees the other.
  room_waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool late = false;
  while (!late && state() == State::running && ids::live_locked(rq.id, this) &&
         max_ && q_.size() >= max_) {
    if (!rq.timed) room_cv_.wait(lock);
    else late = room_cv_.wait_until(lock, rq.deadline) == std::cv_status::timeout;
  }
  room_waiters_.fetch_sub(1, std::memory_order_relaxed);
  blocked_.fetch_sub(1, std::memory_order_relaxed);
  int rc = DSS_SUCCESS;
  if (state() != State::running) rc = DSS_ERR_NOT_STARTED;
  else if (!ids::live_locked(rq.id, this)) rc = DSS_ERR_INVALID_UTILID;
  else if (late && max_ && q_.size() >= max_) rc = DSS_ERR_TIMEOUT;
  if (rc == DSS_ERR_TIMEOUT) ++rejected_;
  // Pass the turn on (see settle_locked) while room is left besides ours.
  std::size_t mine = rc == DSS_SUCCESS ? 1 : 0;
  if (room_waiters_.load(std::memory_order_relaxed) && (!max_ || q_.size() + mine < max_))
    room_cv_.notify_one();
  return rc;
}

// Under the lock: appends the item (rec: a blocking one's record) and
// says what to publish once the lock is let go.
int Hub::enqueue_locked(const Request& rq, Blocking* rec, Notifier::Post* post) {
  Notifier::Udp udp = notify_.udp_locked();  // (set_port takes the lock too)
  bool ok;
  if (rec) {
    rec->id = rq.id;
    rec->decode = rq.decode;
    rec->ret = rq.ret;
    rec->data = rq.data;
    ok = q_.push_locked(rec);
  } else {
    ok = q_.push_locked(rq.id, rq.decode, rq.data);
  }
  if (!ok) {
    // The room this producer was handed goes to the next one waiting.
    if (room_waiters_.load(std::memory_order_relaxed)) room_cv_.notify_one();
    return DSS_ERR_OUT_OF_MEMORY;
  }
  *post = notify_.queued_locked(udp);
  post->depth = q_.depth_after_push_locked(post->send);
  return DSS_SUCCESS;
}

// Fire and forget. A hub is never freed (see create), so the lock alone
// keeps this one usable; a reference keeps it ours, when it has to wait
// for room or send a datagram (its socket must stay open), taken once the
// registration is confirmed (so the count is not 0) and let go unlocked.
int Hub::deliver_ff(const Request& rq) {
  Notifier::Post post;
  bool held = false;
  int rc;
  {
    std::unique_lock<std::mutex> lock(q_.mu);
    rc = admit_locked(rq);
    if (rc == DSS_SUCCESS) rc = room_locked(rq);
    if (rc == kMustWait) {
      ref();
      held = true;
      rc = wait_room(lock, rq);
    }
    if (rc == DSS_SUCCESS) rc = enqueue_locked(rq, nullptr, &post);
    // A datagram to send or a wake hook to call: the hub (and so the
    // hook's context, which lives until the hub is recycled) stays.
    if (rc == DSS_SUCCESS && (post.send || post.hook) && !held) {
      ref();
      held = true;
    }
  }
  // The entry may be gone already; waking a recycled hub's Lua thread
  // would only be a spurious wake-up.
  if (rc == DSS_SUCCESS) rc = notify_.post(post);
  if (held) unref();
  return rc;
}

// A blocking item: queued, then waited for until it ends, holding a
// reference. The record lives here, on the producer's stack.
int Hub::deliver_blocking(const Request& rq) {
  Blocking rec;
  Notifier::Post post;
  int rc;
  {
    std::unique_lock<std::mutex> lock(q_.mu);
    rc = admit_locked(rq);
    if (rc != DSS_SUCCESS) return rc;
    ref();
    rc = room_locked(rq);
    if (rc == kMustWait) rc = wait_room(lock, rq);
    if (rc == DSS_SUCCESS) rc = enqueue_locked(rq, &rec, &post);
    // Counted as the item becomes visible (stats() under the lock sees both).
    if (rc == DSS_SUCCESS) blocked_.fetch_add(1, std::memory_order_relaxed);
  }
  int end = DSS_SUCCESS;
  if (rc == DSS_SUCCESS) {
    rc = notify_.post(post);
    end = wait_ended(rec, rq);
    blocked_.fetch_sub(1, std::memory_order_relaxed);
  }
  unref();
  return rq.v2 && end != DSS_SUCCESS ? end : rc;
}

// Waits, without the lock, until a blocking item ends; past the deadline,
// ends it by cancellation on this thread if it is queued or parked.
int Hub::wait_ended(Blocking& b, const Request& rq) {
  for (;;) {
    std::uint32_t v = b.sig.load();
    if (v & Signal::kEnded) return b.cancelled ? DSS_ERR_CANCELLED : DSS_SUCCESS;
    if (!b.expired && (!rq.timed || Clock::now() < rq.deadline) &&
        b.sig.wait(v, rq.timed, rq.deadline))
      continue;  // something changed
    if (expire(b)) return DSS_ERR_TIMEOUT;
  }
}

// Past the deadline: takes the item back if it is still queued or parked
// and ends it (true); else (it ended meanwhile, or its callback runs)
// waits for its next change. Only this thread sets expired, under the
// lock (settle reads it there).
bool Hub::expire(Blocking& b) {
  std::unique_lock<std::mutex> lock(q_.mu);
  b.expired = true;
  if (b.st == St::done) return false;
  bool queued;
  if (take_back_locked(b, &queued)) {
    Taken t{b.id, queued ? b.decode : nullptr, b.data, &b, 0};
    Ending e;
    add_ending_locked(&e, &t, 1);
    lock.unlock();
    end_by_cancel(t, true, &e);
    return true;
  }
  std::uint32_t v = b.sig.load();
  lock.unlock();
  b.sig.wait(v, false, Clock::time_point{});
  return false;
}

// Under the lock, past the deadline: takes the item back if it is still
// queued or parked (then it ends by cancellation, on this thread).
bool Hub::take_back_locked(Blocking& b, bool* queued) {
  *queued = b.st == St::queued && Queue::kill(b);
  if (*queued) {
    move(b, St::queued, St::cancelling);
    after_kills_locked(1);
    return true;
  }
  if (b.st != St::parked) return false;
  tickets_.drop(b.ticket);
  move(b, St::parked, St::cancelling);
  return true;
}

}  // namespace dss
