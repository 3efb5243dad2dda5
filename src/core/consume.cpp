// consume.cpp -- the consumer's steps, on the Lua thread: take an item,
// call its decoder, settle it (or finish it when the decoder raised); for
// a parked blocking item, claim it from its ticket, call its return
// callback and finish it. See hub.hpp for the order and item.hpp for the
// states each step moves an item through.
#include "hub.hpp"

namespace dss {

// Room made: one producer waiting for it is to be woken, and passes the
// turn on while room is left (wait_room): a herd of producers woken at once
// would take the consumer's CPU and lock from it. Returns whether one
// waits: the caller wakes it once the lock is let go (woken under it, the
// producer would only go to sleep again, on the lock).
bool Hub::settle_locked() {
  q_.settle_locked();
  return room_waiters_.load(std::memory_order_relaxed) != 0;
}

// settle_locked() under a lock of its own, and its wake-up after it.
void Hub::settle_now() {
  bool room;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    room = settle_locked();
  }
  if (room) room_cv_.notify_one();
}

bool Hub::extend() {
  Queue::Block* freed = nullptr;
  bool more, room;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    took_untaken_locked();  // before their blocks can be let go
    room = settle_locked();
    more = q_.reserve_locked(&freed);
    if (!more) notify_.reset_locked();
  }
  if (room) room_cv_.notify_one();
  Queue::free_blocks(freed);
  return more;
}

void Hub::flush_room() {
  if (!q_.unsettled()) return;
  // A read-modify-write, not a load (see wait_room): ordered with the
  // producer's increment, so one of the two sees the other. (Not a fence:
  // GCC's ThreadSanitizer refuses those.)
  if (room_waiters_.fetch_add(0, std::memory_order_seq_cst)) settle_now();
}

Taken Hub::take() {
  if (room_waiters_.load(std::memory_order_relaxed) &&
      q_.unsettled() >= room_batch_.load(std::memory_order_relaxed))
    settle_now();
  int level = lua_.push();
  // Published before the claim: whoever then fails to kill the entry
  // (unreg) reads it after (the claim releases it, the failed kill
  // acquires it) and waits for us to be done with the item.
  auto mark = [this, level](std::uint64_t id) { lua_.set(level, id); };
  for (;;) {
    bool ended = false;
    Taken t = q_.claim(mark, &ended);
    if (t) {
      t.level = level;
      if (t.blk) untaken_push(t.blk);
      if (ended) extend();
      return t;
    }
    if (!extend()) {
      lua_.pop(level);
      return Taken{};
    }
  }
}

// A blocking item the consumer claimed is taken: out of reach of its
// producer's timeout, which could otherwise try to kill its entry.
void Hub::took_locked(Blocking& b) {
  move(b, St::queued, St::taken);
  b.entry = nullptr;
}

void Hub::untaken_push(Blocking* b) {
  if (lua_.n_untaken == LuaThread::kUntaken) {  // nested that deep: at once
    std::lock_guard<std::mutex> lock(q_.mu);
    took_untaken_locked();
  }
  lua_.untaken[lua_.n_untaken++] = b;
}

void Hub::took_untaken_locked() {
  for (int k = 0; k < lua_.n_untaken; ++k) took_locked(*lua_.untaken[k]);
  lua_.n_untaken = 0;
}

// Under the lock that ends or parks b: marks it taken first if it is still
// marked queued (then it is the innermost untaken item: items claimed after
// it ended before it, or were marked with it by an extend).
void Hub::settle_took_locked(Blocking& b) {
  if (b.st != St::queued) return;
  if (lua_.n_untaken == 0 || lua_.untaken[lua_.n_untaken - 1] != &b) std::abort();  // a bug in the core
  --lua_.n_untaken;
  took_locked(b);
}

int Hub::call_decoder(const Taken& item, lua_State* L) {
  ++decoded_;
  return ids::invoke_decode(item.id, item.decode, L, item.data);
}

TicketId Hub::settle(const Taken& item, int n) {
  Blocking* b = item.blk;
  if (!b || n <= 0) {
    finish(item);
    return 0;
  }
  TicketId t = 0;
  Signal::Wake wake;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    settle_took_locked(*b);
    if (state() == State::running && ids::live_locked(item.id, this)) t = tickets_.put(b);
    if (t) {
      move(*b, St::taken, St::parked);
      if (b->expired) wake = b->sig.bump();  // its producer may end it now
    } else {
      move(*b, St::taken, St::cancelling);
    }
  }
  wake.send();
  // Unregistered (or closing, or no memory for a ticket) while it was
  // being decoded: it ends by cancellation, here.
  if (!t) end_by_cancel(Taken{item.id, nullptr, b->data, b, 0}, false, nullptr);
  lua_.pop(item.level);
  return t;
}

void Hub::finish(const Taken& item) {
  if (Blocking* b = item.blk) {
    // The record lives on the waiting producer's stack: ending it is the
    // last thing done to it.
    Signal::Wake wake;
    {
      std::lock_guard<std::mutex> lock(q_.mu);
      settle_took_locked(*b);
      move(*b, St::taken, St::done);
      wake = b->sig.end();
    }
    wake.send();
  }
  lua_.pop(item.level);
}

Blocking* Hub::claim(TicketId ticket) {
  int level = lua_.push();
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    if (Blocking* b = tickets_.get(ticket)) {
      tickets_.drop(ticket);
      move(*b, St::parked, St::returning);
      // Under the lock, so an unreg that did not find it parked sees this.
      lua_.set(level, b->id);
      b->level = static_cast<unsigned char>(level);
      return b;
    }
  }
  lua_.pop(level);  // not under the lock: pop may take it
  return nullptr;
}

int Hub::call_return(Blocking* b, lua_State* L, int garbage) {
  ++returned_;
  return ids::invoke_ret(b->id, b->ret, L, b->data, garbage);
}

void Hub::finish_returned(Blocking* b) {
  int level;
  Signal::Wake wake;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    level = b->level;  // b may be gone once the lock is let go
    move(*b, St::returning, St::done);
    wake = b->sig.end();
  }
  wake.send();
  lua_.pop(level);
}

bool Hub::pending(TicketId ticket) {
  std::lock_guard<std::mutex> lock(q_.mu);
  return tickets_.get(ticket) != nullptr;
}

}  // namespace dss
