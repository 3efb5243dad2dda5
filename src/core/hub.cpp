// hub.cpp -- see hub.hpp: creation, registrations, statistics, settings.
#include "hub.hpp"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <new>

namespace dss {

void move(Blocking& b, Blocking::St from, Blocking::St to) {
  if (b.st != from) {
    std::fprintf(stderr, "darksidesync: item state %d, expected %d (to %d)\n",
                 int(b.st), int(from), int(to));
    std::abort();
  }
  b.st = to;
}

Hub::Hub() {
#if defined(__GLIBC__) && defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
  // An adaptive mutex spins a little before it sleeps: the hub's critical
  // sections are a few dozen instructions, and with many producers (8 on 2
  // CPUs in the bench) sleeping and waking on the futex cost more than the
  // work. std::mutex is a default pthread mutex here; re-made, unlocked.
  pthread_mutex_t* m = q_.mu.native_handle();
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a) == 0) {
    if (pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP) == 0) {
      pthread_mutex_destroy(m);
      pthread_mutex_init(m, &a);
    }
    pthread_mutexattr_destroy(&a);
  }
#endif
}

namespace {

// The hubs kept for reuse (see create). Leaked on purpose, as the id table.
struct Pool {
  std::mutex mu;
  Hub* head = nullptr;
  std::size_t n = 0;
};

Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

}  // namespace

Hub* Hub::create() {
  Hub* h = nullptr;
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    if ((h = p.head)) {
      p.head = h->pool_next_;
      --p.n;
    }
  }
  if (!h) return new (std::nothrow) Hub();
  h->start();
  return h;
}

std::size_t Hub::pooled() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.n;
}

void Hub::start() {
  std::lock_guard<std::mutex> lock(q_.mu);
  pool_next_ = nullptr;
  refs_.store(1, std::memory_order_relaxed);
  state_.store(State::running, std::memory_order_release);
}

// The last reference went: everything back to a new hub's state, under the
// lock (a producer with a stale pointer may be waiting for it), and into
// the pool. A hub the binding used is closed by now; one that never was
// (tests) loses its queued items without their endings, as it always did.
void Hub::recycle() {
  void (*release)(void*) = nullptr;
  void* release_ctx = nullptr;
  {
    ids::Writer table;  // the table's lock first
    std::lock_guard<std::mutex> lock(q_.mu);
    // A hub let go without close() still has live ids: a producer may have
    // taken a reference between the last unref and this lock. Its unref
    // recycles the hub then.
    if (refs_.load(std::memory_order_acquire) != 0) return;
    state_.store(State::closed, std::memory_order_release);
    for (const Registration& r : regs_) table.undo(r.id);
    std::vector<Registration>().swap(regs_);
    q_.reset_locked();
    release = notify_.take_hook_release_locked(&release_ctx);
    notify_.reset_locked_all();
    tickets_.reset();
    lua_.reset();
    decoded_ = returned_ = cancelled_ = timedout_ = rejected_ = 0;
    blocked_.store(0, std::memory_order_relaxed);
    max_ = 0;
    room_batch_.store(1, std::memory_order_relaxed);
  }
  if (release) release(release_ctx);
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  pool_next_ = p.head;
  p.head = this;
  ++p.n;
}

void Hub::ref() { refs_.fetch_add(1, std::memory_order_relaxed); }

void Hub::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) recycle();
}

// --- registrations -------------------------------------------------------

void* Hub::reg(void* libid, DSS_cancel_1v0_t cancel, int* err) {
  return reg_(libid, cancel, err, nullptr, nullptr, false);
}

void* Hub::regc(void* libid, DSS_cancel_2v0_t cancel, void* context,
                const char* name, int* err) {
  return reg_(libid, ids::fn_cast<DSS_cancel_1v0_t>(cancel), err, context,
              name, true);
}

void* Hub::reg_(void* libid, DSS_cancel_1v0_t cancel, int* err, void* context,
                const char* name, bool ctx) {
  int dummy;
  if (!err) err = &dummy;
  if (!cancel) {
    *err = DSS_ERR_NO_CANCEL_PROVIDED;
    return nullptr;
  }
  ids::Writer table;  // the table's lock first
  std::lock_guard<std::mutex> lock(q_.mu);
  if (state() != State::running) {
    *err = DSS_ERR_NOT_STARTED;
    return nullptr;
  }
  if (std::uint64_t existing = find_libid_locked(libid)) {
    *err = DSS_ERR_ALREADY_REGISTERED;
    return to_utilid(existing);
  }
  std::uint64_t id = table.add(this, ctx, context, name);
  if (id) {
    try {
      regs_.push_back(Registration{id, libid, cancel, false});
    } catch (const std::bad_alloc&) {
      table.undo(id);
      id = 0;
    }
  }
  *err = id ? DSS_SUCCESS : DSS_ERR_OUT_OF_MEMORY;
  return id ? to_utilid(id) : nullptr;
}

void* Hub::getutilid(void* libid, int* err) {
  int dummy;
  if (!err) err = &dummy;
  std::lock_guard<std::mutex> lock(q_.mu);
  if (state() != State::running) {
    *err = DSS_ERR_NOT_STARTED;
    return nullptr;
  }
  std::uint64_t id = find_libid_locked(libid);
  *err = id ? DSS_SUCCESS : DSS_ERR_UNKNOWN_LIB;
  return id ? to_utilid(id) : nullptr;
}

std::uint64_t Hub::find_libid_locked(void* libid) const {
  for (const Registration& r : regs_)
    if (r.libid == libid) return r.id;
  return 0;
}

void Hub::call_cancel(DSS_cancel_1v0_t cancel, void* utilid) {
  ids::invoke_cancel(id_of(utilid), cancel);
}

std::size_t Hub::client_name(void* utilid, char* buf, std::size_t n) {
  return ids::client_name(id_of(utilid), buf, n);
}

// --- the Lua thread's marks ------------------------------------------------

void Hub::lua_thread_here() { lua_.here(); }

void Hub::drain_enter() { lua_.drain_enter(); }

void Hub::drain_leave() {
  lua_.drain_leave();
  flush_room();
  // Entries killed since the reservation was made (unreg, a timeout) may
  // have emptied the queue while the killer could not tell: settle and
  // look, under the lock (see Queue::kills_locked).
  if (q_.killed_since_reserve()) extend();
}

// --- settings and statistics ---------------------------------------------------

int Hub::fd_(bool handed_out) {
  std::lock_guard<std::mutex> lock(q_.mu);
  return notify_.fd_locked(handed_out, state() == State::running, q_.size() > 0);
}

void Hub::set_wake_hook(void (*fn)(void*), void* ctx, void (*release)(void*)) {
  bool now;
  {
    std::lock_guard<std::mutex> lock(q_.mu);
    notify_.set_hook_locked(fn, ctx, release);
    now = fn && q_.size() > 0;  // the transition happened already
  }
  if (now) fn(ctx);
}

void Hub::set_max(std::size_t max) {
  std::lock_guard<std::mutex> lock(q_.mu);
  max_ = max;
  // Producers waiting for room are woken once half the bound is free
  // while the consumer runs (each wake-up costs the consumer a futex call
  // and, on few CPUs, its CPU for a moment: an eighth cost a quarter more
  // of the throughput with 4 producers), and at once when it stops
  // (drain_leave).
  room_batch_.store(max / 2 > 0 ? max / 2 : 1, std::memory_order_relaxed);
  room_cv_.notify_all();
}

std::size_t Hub::max() const {
  std::lock_guard<std::mutex> lock(q_.mu);
  return max_;
}

Stats Hub::stats() {
  std::lock_guard<std::mutex> lock(q_.mu);
  Stats s;
  s.delivered = q_.delivered_locked();
  s.decoded = decoded_;
  s.returned = returned_;
  s.cancelled = cancelled_;
  s.timedout = timedout_;
  s.rejected = rejected_;
  s.notified = notify_.notified();
  s.notifyfailed = notify_.notifyfailed();
  s.queued = q_.size();
  s.maxqueued = q_.maxqueued_locked();
  s.blocked = blocked_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace dss
