// hub.cpp -- see hub.hpp.
#include "hub.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <new>
#include <mutex>
#include <shared_mutex>
#include <type_traits>
#include <unordered_map>

namespace dss {

namespace {

// A reader-writer lock that prefers writers (glibc's default prefers
// readers, and producers flooding the table with lookups could then keep
// reg and unreg waiting for good).
class RwLock {
 public:
  RwLock() {
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&l_, &a);
    pthread_rwlockattr_destroy(&a);
  }
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;
  void lock_shared() { pthread_rwlock_rdlock(&l_); }
  void lock() { pthread_rwlock_wrlock(&l_); }
  void unlock() { pthread_rwlock_unlock(&l_); }
  void unlock_shared() { pthread_rwlock_unlock(&l_); }

 private:
  pthread_rwlock_t l_;
};

// The process-wide table of live registrations: utilid -> hub. Ids come
// from a 64-bit counter and are never reused, so a stale id can only miss.
// A hub leaves the table (under the exclusive lock) before it is destroyed,
// so a hub found under the shared lock stays alive while that is held; past
// it, a reference keeps it. Lock order: the table's lock, then a hub's.
// The table is leaked on purpose: producer threads may still call in while
// the process exits, after static destructors would have run.
struct Table {
  RwLock mu;  // shared: lookups (every deliver); exclusive: changes
  std::unordered_map<std::uint64_t, Hub*> ids;
  std::uint64_t next_id = 0x5d55000;  // arbitrary, far from small garbage
};

Table& table() {
  static Table* t = new Table;
  return *t;
}

// Looks up the hub of a utilid and takes a reference on it.
Hub* find_ref(std::uint64_t id) {
  Table& t = table();
  std::shared_lock<RwLock> lock(t.mu);
  auto it = t.ids.find(id);
  if (it == t.ids.end()) return nullptr;
  it->second->ref();
  return it->second;
}

// Removes id from the table; returns its hub with a reference, or nullptr.
Hub* erase_ref(std::uint64_t id) {
  Table& t = table();
  std::lock_guard<RwLock> lock(t.mu);
  auto it = t.ids.find(id);
  if (it == t.ids.end()) return nullptr;
  Hub* hub = it->second;
  t.ids.erase(it);
  hub->ref();
  return hub;
}

void unlink_pending(Blocking** list, Blocking* b) {
  if (b->prev) b->prev->next = b->next;
  else *list = b->next;
  if (b->next) b->next->prev = b->prev;
  b->next = b->prev = nullptr;
}

// Identifies the calling thread (for the deadlock guard). Not a
// thread_local: the module is dlopen'ed, and LeakSanitizer crashes
// scanning the dynamic TLS of such libraries at exit.
template <typename T>
std::uintptr_t tag_of(T t) {
  if constexpr (std::is_pointer<T>::value)
    return reinterpret_cast<std::uintptr_t>(t);
  else
    return static_cast<std::uintptr_t>(t);
}
std::uintptr_t my_tag() { return tag_of(pthread_self()); }

// What a claimed entry holds; v is the id it held. A blocking item's
// decoder and data are read from its record, which stays valid until the
// item ends.
Taken taken_of(const Entry& e, std::uint64_t v) {
  Taken t;
  t.id = v & ~kBlockingBit;
  if (v & kBlockingBit) {
    t.blk = e.blk;
    t.decode = e.blk->decode;
    t.data = e.blk->data;
  } else {
    t.decode = e.decode;
    t.data = e.data;
  }
  return t;
}

using Clock = std::chrono::steady_clock;

// A deadline `seconds` from now; false when there is none (no limit, or
// too far to matter).
bool deadline_in(double seconds, Clock::time_point* out) {
  if (!(seconds >= 0) || seconds > 1e8) return false;
  *out = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
  return true;
}

}  // namespace

Hub::Hub() {
#if defined(__GLIBC__) && defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
  // An adaptive mutex spins a little before it sleeps: the hub's critical
  // sections are a few dozen instructions, and with many producers (8 on 2
  // CPUs in the bench) sleeping and waking on the futex cost more than the
  // work. std::mutex is a default pthread mutex here; re-made, unlocked.
  pthread_mutex_t* m = mu_.native_handle();
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

Hub* Hub::create() { return new (std::nothrow) Hub(); }

Hub::~Hub() {
  // The binding closes a hub before its last reference goes, which removes
  // its ids from the table; make sure no id can outlive the hub anyway.
  {
    Table& t = table();
    std::lock_guard<RwLock> lock(t.mu);
    for (const Registration& r : regs_) t.ids.erase(r.id);
  }
  while (qhead_) {
    Block* b = qhead_;
    qhead_ = b->next;
    delete b;
  }
  delete spare_;
  if (efd_ >= 0) ::close(efd_);
  if (efd_w_ >= 0 && efd_w_ != efd_) ::close(efd_w_);
  int fd = sock_.load();
  if (fd >= 0) ::close(fd);
}

void Hub::ref() { refs_.fetch_add(1, std::memory_order_relaxed); }

void Hub::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

// --- registrations -------------------------------------------------------

void* Hub::reg(void* libid, DSS_cancel_1v0_t cancel, int* err) {
  int dummy;
  if (!err) err = &dummy;
  if (!cancel) {
    *err = DSS_ERR_NO_CANCEL_PROVIDED;
    return nullptr;
  }
  std::uint64_t id;
  {
    Table& t = table();
    std::lock_guard<RwLock> tlock(t.mu);  // the table's lock first
    std::lock_guard<std::mutex> lock(mu_);
    if (state() != State::running) {
      *err = DSS_ERR_NOT_STARTED;
      return nullptr;
    }
    if (std::uint64_t existing = find_libid_locked(libid)) {
      *err = DSS_ERR_ALREADY_REGISTERED;
      return to_utilid(existing);
    }
    try {
      id = ++t.next_id;
      t.ids.emplace(id, this);
      try {
        regs_.push_back(Registration{id, libid, cancel, false});
      } catch (...) {
        t.ids.erase(id);
        throw;
      }
    } catch (const std::bad_alloc&) {
      *err = DSS_ERR_OUT_OF_MEMORY;
      return nullptr;
    }
  }
  *err = DSS_SUCCESS;
  return to_utilid(id);
}

void* Hub::getutilid(void* libid, int* err) {
  int dummy;
  if (!err) err = &dummy;
  std::lock_guard<std::mutex> lock(mu_);
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

bool Hub::registered_locked(std::uint64_t id) const {
  for (const Registration& r : regs_)
    if (r.id == id) return true;
  return false;
}

std::size_t Hub::size_locked() const {
  std::size_t c = count_.load(std::memory_order_relaxed);
  std::size_t u = unsettled_.load(std::memory_order_relaxed);
  return c > u ? c - u : 0;
}

std::size_t Hub::size() const { return size_locked(); }

bool Hub::draining_here(const Hub* hub) {
  return hub->drainer_.load(std::memory_order_relaxed) == my_tag();
}

void Hub::drain_reset_stale(const void* sp) {
  if (drain_depth_ == 0 || !sp) return;
  if (drainer_.load(std::memory_order_relaxed) != my_tag() ||
      reinterpret_cast<std::uintptr_t>(sp) >= drain_sp_) {
    drain_depth_ = 0;
    drainer_.store(0, std::memory_order_relaxed);
  }
}

void Hub::drain_enter(const void* sp) {
  drain_reset_stale(sp);
  if (drain_depth_++ == 0) {
    drainer_.store(my_tag(), std::memory_order_relaxed);
    drain_sp_ = reinterpret_cast<std::uintptr_t>(sp);
  }
}

void Hub::drain_leave() {
  if (--drain_depth_ == 0) drainer_.store(0, std::memory_order_relaxed);
  flush_room();
}

// --- deliver -----------------------------------------------------------

int Hub::deliver(void* utilid, DSS_decoder_1v0_t decode, DSS_return_1v0_t ret,
                 void* data) {
  return deliver2_(utilid, decode, ret, data, 0, -1, false);
}

int Hub::deliver2(void* utilid, DSS_decoder_1v0_t decode, DSS_return_1v0_t ret,
                  void* data, unsigned flags, long timeout_ms) {
  return deliver2_(utilid, decode, ret, data, flags, timeout_ms, true);
}

int Hub::deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                   DSS_return_1v0_t ret, void* data, unsigned flags,
                   long timeout_ms, bool v2) {
  std::uint64_t id = id_of(utilid);
  Hub* hub;
  {
    Table& t = table();
    std::shared_lock<RwLock> lock(t.mu);
    auto it = t.ids.find(id);
    if (it == t.ids.end()) return DSS_ERR_INVALID_UTILID;
    hub = it->second;
    if (!decode) return DSS_ERR_NO_DECODE_PROVIDED;
    if (v2 && (flags & ~unsigned(DSS_DELIVER_NOWAIT)))
      return DSS_ERR_INVALID_ARGUMENT;
    if (!ret) {
      // Fire and forget, the common case: under the table's shared lock,
      // which keeps the hub alive, with no reference taken (two atomic
      // operations on the hub's busiest cache line fewer per item). Only
      // when it has to wait for room does it go the long way.
      Post post;
      int rc = hub->deliver_local(id, decode, nullptr, data, flags, timeout_ms,
                                  v2, nullptr, &post);
      if (rc != DSS_SUCCESS && rc != kMustWait) return rc;  // refused
      if (rc == DSS_SUCCESS) {
        if (!post.wake && !post.send) return DSS_SUCCESS;
        // Queued, with the Lua thread to wake or a datagram to send: done
        // holding a reference instead of the table's lock (a reg or unreg
        // waiting for that lock would keep every producer waiting too).
        hub->ref();
        lock.unlock();
        rc = hub->after_queue(post);
        hub->unref();
        return rc;
      }
    }
    hub->ref();
  }
  int rc;
  if (ret) {
    Blocking rec;  // only a blocking item needs one (it has a condvar)
    rc = hub->deliver_local(id, decode, ret, data, flags, timeout_ms, v2, &rec,
                            nullptr);
  } else {
    rc = hub->deliver_local(id, decode, nullptr, data, flags, timeout_ms, v2,
                            nullptr, nullptr);
  }
  hub->unref();
  return rc;
}

int Hub::deliver_local(std::uint64_t id, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data, unsigned flags,
                       long timeout_ms, bool v2, Blocking* rec, Post* post) {
  Clock::time_point deadline{};
  bool timed = timeout_ms >= 0;
  if (timed) deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::size_t depth;
  bool send;
  std::unique_lock<std::mutex> lock(mu_);
  if (state() != State::running) return DSS_ERR_NOT_STARTED;
  if (!registered_locked(id)) return DSS_ERR_INVALID_UTILID;
  if (ret && draining_here(this)) return DSS_ERR_WOULD_DEADLOCK;
  if (max_ && size_locked() >= max_) {
    // Full: wait for room (1v0 always; 2v0 unless told not to).
    if ((flags & DSS_DELIVER_NOWAIT) || timeout_ms == 0) {
      ++rejected_;
      return DSS_ERR_QUEUE_FULL;
    }
    if (draining_here(this)) return DSS_ERR_WOULD_DEADLOCK;
    if (post) return kMustWait;
    ++blocked_;
    room_waiters_.fetch_add(1, std::memory_order_relaxed);
    bool late = false;
    while (state() == State::running && registered_locked(id) && max_ &&
           size_locked() >= max_) {
      if (!timed) {
        room_cv_.wait(lock);
      } else if (room_cv_.wait_until(lock, deadline) ==
                 std::cv_status::timeout) {
        late = true;
      }
      if (late) break;
    }
    room_waiters_.fetch_sub(1, std::memory_order_relaxed);
    --blocked_;
    if (state() != State::running) return DSS_ERR_NOT_STARTED;
    if (!registered_locked(id)) return DSS_ERR_INVALID_UTILID;
    if (late && max_ && size_locked() >= max_) {
      ++rejected_;
      return DSS_ERR_TIMEOUT;
    }
  }
  Block* t = qtail_;
  if (!t || t->end == kEntries) {
    Block* nb = spare_;
    if (nb) spare_ = nullptr;
    else nb = new (std::nothrow) Block;
    if (!nb) return DSS_ERR_OUT_OF_MEMORY;
    nb->next = nullptr;
    nb->end = 0;
    if (t) t->next = nb;
    else qhead_ = nb;
    qtail_ = t = nb;
  }
  Entry& e = t->e[t->end];
  if (rec) {
    e.blk = rec;
    e.data = nullptr;
    rec->id = id;
    rec->decode = decode;
    rec->ret = ret;
    rec->data = data;
    rec->entry = &e;
    e.id.store(id | kBlockingBit, std::memory_order_relaxed);
  } else {
    e.decode = decode;
    e.data = data;
    e.id.store(id, std::memory_order_relaxed);
  }
  ++t->end;
  count_.store(count_.load(std::memory_order_relaxed) + 1,
               std::memory_order_relaxed);
  ++delivered_;
  // The exact depth needs the consumer's count of items taken, on the Lua
  // thread's cache line: read it only when the depth can be a new maximum
  // (the queue count bounds it from above) or a datagram reports it.
  int port = port_.load(std::memory_order_relaxed);
  std::size_t upper = count_.load(std::memory_order_relaxed);
  depth = 0;
  if (upper > maxqueued_ || port != 0) {
    depth = size_locked();
    if (depth > maxqueued_) maxqueued_ = depth;
  }
  bool transition = !signalled_;
  if (transition) signal_locked();
  // The Lua thread asleep in wait() is woken once, after the unlock (so that
  // it does not wake up only to wait for our lock); our reference keeps the
  // hub and its condition variable alive until then.
  bool wake = lua_waiting_;
  lua_waiting_ = false;
  send = port != 0 &&
         (transition || !coalesce_.load(std::memory_order_relaxed));
  if (!ret) {
    // Fire and forget: the entry may be gone already once we unlock.
    lock.unlock();
    Post after{wake, send, depth};
    if (post) {
      // Called under the table's shared lock: the wake-up and the datagram
      // are left to the caller, which lets that lock go first.
      *post = after;
      return DSS_SUCCESS;
    }
    return after_queue(after);
  }
  ++blocked_;
  lock.unlock();
  int rc = after_queue(Post{wake, send, depth});
  lock.lock();
  int end = wait_blocking(lock, *rec, timed, deadline);
  --blocked_;
  if (v2 && end != DSS_SUCCESS) return end;
  return rc;
}

// After a delivery queued its item and let the hub's lock go: wakes the
// Lua thread asleep in wait(), sends the datagram.
int Hub::after_queue(const Post& p) {
  if (p.wake) wait_cv_.notify_one();
  return p.send ? notify_udp(p.depth) : DSS_SUCCESS;
}

// Waits (under the lock) until a blocking item ends; past the deadline,
// ends it by cancellation on this thread if it is queued or parked.
int Hub::wait_blocking(std::unique_lock<std::mutex>& lock, Blocking& b,
                       bool timed, Clock::time_point deadline) {
  for (;;) {
    if (b.st == Blocking::St::done)
      return b.cancelled ? DSS_ERR_CANCELLED : DSS_SUCCESS;
    if (!b.expired && timed && Clock::now() >= deadline) b.expired = true;
    if (b.expired) {
      if (b.st == Blocking::St::queued) {
        std::uint64_t expect = b.id | kBlockingBit;
        if (b.entry->id.compare_exchange_strong(expect, 0)) {
          b.st = Blocking::St::done;
          count_.store(count_.load(std::memory_order_relaxed) - 1,
                       std::memory_order_relaxed);
          kills_.fetch_add(1, std::memory_order_release);
          ++timedout_;
          if (size_locked() == 0) reset_locked();
          if (room_waiters_.load(std::memory_order_relaxed))
            room_cv_.notify_all();
          lock.unlock();
          b.decode(nullptr, b.data, to_utilid(b.id));
          lock.lock();
          return DSS_ERR_TIMEOUT;
        }
        // The Lua thread claimed it a moment ago: it is being decoded.
      } else if (b.st == Blocking::St::parked) {
        unlink_pending(&pending_, &b);
        b.ticket->item = nullptr;  // the waiting-thread callback is spent
        b.ticket = nullptr;
        b.st = Blocking::St::done;
        ++timedout_;
        lock.unlock();
        b.ret(nullptr, b.data, to_utilid(b.id), 0);
        lock.lock();
        return DSS_ERR_TIMEOUT;
      }
      b.cv.wait(lock);  // busy: its callback is running; parked/done notify
    } else if (timed) {
      b.cv.wait_until(lock, deadline);
    } else {
      b.cv.wait(lock);
    }
  }
}

// Under the lock: the queue just became non-empty.
void Hub::signal_locked() {
  signalled_ = true;
  if (efd_w_ < 0) return;
#ifdef __linux__
  std::uint64_t one = 1;
  ssize_t n = ::write(efd_w_, &one, sizeof one);
#else
  char one = 1;
  ssize_t n = ::write(efd_w_, &one, 1);
#endif
  (void)n;  // EAGAIN: already readable
  notified_.fetch_add(1, std::memory_order_relaxed);
}

// Under the lock: the queue is empty.
void Hub::reset_locked() {
  if (!signalled_) return;
  signalled_ = false;
  if (efd_ < 0) return;
#ifdef __linux__
  std::uint64_t v;
  ssize_t n = ::read(efd_, &v, sizeof v);
  (void)n;
#else
  char buf[64];
  while (::read(efd_, buf, sizeof buf) > 0) {
  }
#endif
}

int Hub::fd() {
  std::lock_guard<std::mutex> lock(mu_);
  if (efd_ >= 0) return efd_;
  if (state() != State::running) {
    errno = EBADF;
    return -1;
  }
#ifdef __linux__
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return -1;
  efd_ = efd_w_ = fd;
#else
  int p[2];
  if (::pipe(p) != 0) return -1;
  for (int f : p) {
    ::fcntl(f, F_SETFL, ::fcntl(f, F_GETFL) | O_NONBLOCK);
    ::fcntl(f, F_SETFD, FD_CLOEXEC);
  }
  efd_ = p[0];
  efd_w_ = p[1];
#endif
  if (size_locked() > 0) signal_locked();
  return efd_;
}

int Hub::notify_udp(std::size_t count) {
  int port = port_.load(std::memory_order_acquire);
  if (port == 0) return DSS_SUCCESS;
  int fd = sock_.load(std::memory_order_acquire);
  int rc = DSS_ERR_UDP_SEND_FAILED;
  if (fd >= 0) {
    char buf[32];
    int len = std::snprintf(buf, sizeof buf, " %zu", count);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(std::uint16_t(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ssize_t sent = ::sendto(fd, buf, std::size_t(len), MSG_NOSIGNAL,
                            reinterpret_cast<sockaddr*>(&to), sizeof to);
    if (sent == len) rc = DSS_SUCCESS;
  }
  (rc == DSS_SUCCESS ? notified_ : notifyfailed_)
      .fetch_add(1, std::memory_order_relaxed);
  return rc;
}

bool Hub::set_port(int port, bool coalesce) {
  if (port < 0 || port > 65535) return false;
  if (port != 0 && sock_.load() < 0) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int expected = -1;
    if (!sock_.compare_exchange_strong(expected, fd)) ::close(fd);
  }
  coalesce_.store(coalesce, std::memory_order_release);
  port_.store(port, std::memory_order_release);  // after the socket exists
  return true;
}

void Hub::set_max(std::size_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  max_ = max;
  // Producers waiting for room are woken a batch of room at a time while
  // the consumer runs, and at once when it stops (drain_leave).
  room_batch_.store(max / 8 > 0 ? max / 8 : 1, std::memory_order_relaxed);
  room_cv_.notify_all();
}

std::size_t Hub::max() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_;
}

// --- consumer side -------------------------------------------------------

void Hub::settle_locked() {
  std::size_t u = unsettled_.load(std::memory_order_relaxed);
  if (u) {
    count_.store(count_.load(std::memory_order_relaxed) - u,
                 std::memory_order_relaxed);
    unsettled_.store(0, std::memory_order_relaxed);
  }
  if (room_waiters_.load(std::memory_order_relaxed)) room_cv_.notify_all();
}

bool Hub::extend() {
  Block* freed = nullptr;
  bool more;
  {
    std::lock_guard<std::mutex> lock(mu_);
    settle_locked();
    if (!cblock_) {
      cblock_ = qhead_;
      cpos_ = 0;
    } else if (cpos_ == kEntries && cblock_->next) {
      cblock_ = cblock_->next;
      cpos_ = 0;
    }
    // Blocks the consumer has passed are done with.
    while (qhead_ && qhead_ != cblock_) {
      Block* b = qhead_;
      qhead_ = b->next;
      if (!spare_) {
        spare_ = b;
      } else {
        b->next = freed;
        freed = b;
      }
    }
    // Passed everything: start the last block over.
    if (cblock_ && cblock_ == qtail_ && cpos_ == cblock_->end) {
      cblock_->end = 0;
      cpos_ = 0;
    }
    lim_block_ = qtail_;
    lim_end_ = qtail_ ? qtail_->end : 0;
    seen_kills_ = kills_.load(std::memory_order_relaxed);
    live_left_ = size_locked();  // settled: every live entry is reserved
    more = size_locked() > 0;
    if (!more) reset_locked();
  }
  while (freed) {
    Block* b = freed;
    freed = b->next;
    delete b;
  }
  return more;
}

void Hub::flush_room() {
  if (room_waiters_.load(std::memory_order_relaxed) &&
      unsettled_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mu_);
    settle_locked();
  }
}

Taken Hub::take() {
  if (room_waiters_.load(std::memory_order_relaxed) &&
      unsettled_.load(std::memory_order_relaxed) >=
          room_batch_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mu_);
    settle_locked();
  }
  for (;;) {
    while (cblock_ && (cblock_ != lim_block_ || cpos_ < lim_end_)) {
      if (cpos_ == kEntries) {
        cblock_ = cblock_->next;  // linked before the reservation was made
        cpos_ = 0;
        continue;
      }
      Entry& e = cblock_->e[cpos_++];
      std::uint64_t id = e.id.exchange(0, std::memory_order_acquire);
      if (!id) continue;  // killed by unreg, close or a timeout
      Taken t = taken_of(e, id);
      unsettled_.store(unsettled_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
      if (t.blk) {
        std::lock_guard<std::mutex> lock(mu_);
        t.blk->st = Blocking::St::busy;
        t.blk->entry = nullptr;
      }
      // At the end of the reservation, or only killed entries left in it:
      // settle now, so the wake-ups reset as soon as the queue is empty.
      // The reservation's live entries are counted when it is made; entries
      // killed since then can end them earlier, and only then is the shared
      // count (written by every deliver) read.
      if (live_left_ > 0) --live_left_;
      if ((cblock_ == lim_block_ && cpos_ == lim_end_) || live_left_ == 0 ||
          (kills_.load(std::memory_order_acquire) != seen_kills_ &&
           size_locked() == 0))
        extend();
      return t;
    }
    if (!extend()) return Taken{};
  }
}

void Hub::finish(const Taken& item) {
  if (Blocking* b = item.blk) {
    // The record lives on the waiting producer's stack: notify under the
    // lock so the producer cannot return (and pop its stack) before we are
    // done.
    std::lock_guard<std::mutex> lock(mu_);
    b->st = Blocking::St::done;
    b->cv.notify_one();
  }
}

bool Hub::park(const Taken& item, Ticket* ticket) {
  Blocking* b = item.blk;
  std::lock_guard<std::mutex> lock(mu_);
  if (state() != State::running || !registered_locked(item.id)) return false;
  b->st = Blocking::St::parked;
  b->ticket = ticket;
  ticket->item = b;
  b->prev = nullptr;
  b->next = pending_;
  if (pending_) pending_->prev = b;
  pending_ = b;
  if (b->expired) b->cv.notify_one();
  return true;
}

Blocking* Hub::claim(Ticket* ticket) {
  Hub* hub = ticket->hub;
  if (!hub) return nullptr;
  std::lock_guard<std::mutex> lock(hub->mu_);
  Blocking* b = ticket->item;
  if (!b) return nullptr;
  unlink_pending(&hub->pending_, b);
  b->ticket = nullptr;
  b->st = Blocking::St::busy;
  ticket->item = nullptr;
  return b;
}

void Hub::finish_returned(Blocking* b) {
  std::lock_guard<std::mutex> lock(mu_);
  b->st = Blocking::St::done;
  b->cv.notify_one();
}

bool Hub::pending(Ticket* ticket) {
  Hub* hub = ticket->hub;
  if (!hub) return false;
  std::lock_guard<std::mutex> lock(hub->mu_);
  return ticket->item != nullptr;
}

void Hub::cancel_decoded(Blocking* b) {
  b->ret(nullptr, b->data, to_utilid(b->id), 0);
  std::lock_guard<std::mutex> lock(mu_);
  ++cancelled_;
  b->cancelled = true;
  b->st = Blocking::St::done;
  b->cv.notify_one();
}

std::size_t Hub::wait(double timeout_s) {
  Clock::time_point deadline;
  bool timed = deadline_in(timeout_s, &deadline);
  std::unique_lock<std::mutex> lock(mu_);
  if (size_locked() > 0 || timeout_s == 0) return size_locked();
  // A deliver clears lua_waiting_ when it wakes us: set it again before
  // every wait, spurious wake-ups included.
  while (size_locked() == 0 && state() == State::running) {
    lua_waiting_ = true;
    if (!timed) {
      wait_cv_.wait(lock);
    } else if (wait_cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      break;
    }
  }
  lua_waiting_ = false;
  return size_locked();
}

Stats Hub::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.delivered = delivered_;
  s.decoded = decoded_;
  s.returned = returned_;
  s.cancelled = cancelled_;
  s.timedout = timedout_;
  s.rejected = rejected_;
  s.notified = notified_.load(std::memory_order_relaxed);
  s.notifyfailed = notifyfailed_.load(std::memory_order_relaxed);
  s.queued = size_locked();
  s.maxqueued = maxqueued_;
  s.blocked = blocked_;
  return s;
}

// --- unreg and cancellation ---------------------------------------------

int Hub::unreg(void* utilid) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = erase_ref(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  int rc = hub->unreg_local(id);
  hub->unref();
  return rc;
}

int Hub::unreg_local(std::uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool found = false;
    for (std::size_t i = 0; i < regs_.size(); ++i) {
      if (regs_[i].id == id) {
        regs_.erase(regs_.begin() + std::ptrdiff_t(i));
        found = true;
        break;
      }
    }
    if (!found) return DSS_ERR_INVALID_UTILID;
    room_cv_.notify_all();  // its producers waiting for room give up
  }
  cancel_items(id);
  return DSS_SUCCESS;
}

long Hub::queued(void* utilid) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = find_ref(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  long n = hub->queued_local(id);
  hub->unref();
  return n;
}

long Hub::queued_local(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!registered_locked(id)) return DSS_ERR_INVALID_UTILID;
  long n = 0;
  for (Block* b = qhead_; b; b = b->next)
    for (std::uint32_t i = 0; i < b->end; ++i)
      if ((b->e[i].id.load(std::memory_order_relaxed) & ~kBlockingBit) == id)
        ++n;
  return n;
}

void Hub::cancel_items(std::uint64_t id) {
  // No allocation on this path: a bounded batch at a time, resuming where
  // the last one stopped (or from the front, if the consumer has freed that
  // block since: then it has passed it, too).
  constexpr std::size_t kBatch = 64;
  Taken batch[kBatch];
  Block* resume = nullptr;
  std::uint32_t resume_at = 0;
  for (;;) {
    std::size_t n = 0;
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Block* b = qhead_;
      std::uint32_t i = 0;
      for (Block* x = qhead_; resume && x; x = x->next) {
        if (x == resume) {
          b = resume;
          i = resume_at;
          break;
        }
      }
      std::size_t killed = 0;
      while (b && !more) {
        for (; i < b->end; ++i) {
          Entry& e = b->e[i];
          std::uint64_t v = e.id.load(std::memory_order_relaxed);
          if (!v || (id && (v & ~kBlockingBit) != id)) continue;
          if (n == kBatch) {
            more = true;
            resume = b;
            resume_at = i;
            break;
          }
          if (!e.id.compare_exchange_strong(v, 0)) continue;  // Lua took it
          Taken& t = batch[n++];
          t = taken_of(e, v);
          if (t.blk) {
            t.blk->st = Blocking::St::busy;
            t.blk->entry = nullptr;
          }
          ++killed;
        }
        if (!more) {
          b = b->next;
          i = 0;
        }
      }
      for (Blocking* p = pending_; p && !more;) {
        Blocking* next = p->next;
        if (!id || p->id == id) {
          if (n == kBatch) {
            more = true;
            break;
          }
          unlink_pending(&pending_, p);
          p->ticket->item = nullptr;  // the Lua side's call becomes a no-op
          p->ticket = nullptr;
          p->st = Blocking::St::busy;
          Taken& t = batch[n++];
          t.id = p->id;
          t.decode = nullptr;  // decoded: cancel through ret
          t.data = p->data;
          t.blk = p;
        }
        p = next;
      }
      if (killed) {
        count_.store(count_.load(std::memory_order_relaxed) - killed,
                     std::memory_order_relaxed);
        kills_.fetch_add(1, std::memory_order_release);
        if (size_locked() == 0) reset_locked();
        if (room_waiters_.load(std::memory_order_relaxed))
          room_cv_.notify_all();
      }
    }
    end_cancelled(batch, n);
    if (!more) return;
  }
}

void Hub::end_cancelled(Taken* items, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) {
    Taken& t = items[k];
    if (t.decode) t.decode(nullptr, t.data, t.utilid());
    else t.blk->ret(nullptr, t.data, t.utilid(), 0);
    std::lock_guard<std::mutex> lock(mu_);
    ++cancelled_;
    if (Blocking* b = t.blk) {
      b->cancelled = true;
      b->st = Blocking::St::done;
      b->cv.notify_one();
    }
  }
}

// --- close -----------------------------------------------------------------

void Hub::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state() != State::running) return;
    state_.store(State::closing, std::memory_order_release);
    room_cv_.notify_all();
    wait_cv_.notify_all();
  }
  // Cancel the items first: none can be taken any more, and a client whose
  // cancel waits for its producers must not wait on us.
  cancel_items(0);
  // Cancel the clients one at a time, without copying the list (no
  // allocation on this path). Each registration is cancelled once: the flag
  // also covers one that another thread is unregistering right now (it has
  // left the id table but not yet our list).
  for (;;) {
    std::uint64_t id = 0;
    DSS_cancel_1v0_t cancel = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Registration& r : regs_) {
        if (!r.cancelled) {
          r.cancelled = true;
          id = r.id;
          cancel = r.cancel;
          break;
        }
      }
    }
    if (!cancel) break;
    void* utilid = to_utilid(id);
    cancel(utilid);
    unreg(utilid);  // INVALID_UTILID here just means the client did it
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_.store(State::closed, std::memory_order_release);
  }
  // Nothing can have been queued or parked since (the state is closing),
  // but make sure of it.
  cancel_items(0);
  std::lock_guard<std::mutex> lock(mu_);
  signalled_ = false;
  if (efd_ >= 0) ::close(efd_);
  if (efd_w_ >= 0 && efd_w_ != efd_) ::close(efd_w_);
  efd_ = efd_w_ = -1;
}

}  // namespace dss
