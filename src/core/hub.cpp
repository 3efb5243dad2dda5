// hub.cpp -- see hub.hpp.
#include "hub.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <new>
#include <mutex>
#include <shared_mutex>
#include <type_traits>
#include <string>
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
// What a regc registration adds: its context and name. Kept from regc to
// the end of its unreg (the cancellations of its items need the context).
struct Client {
  void* context;
  std::string name;
};

struct Table {
  RwLock mu;  // shared: lookups (every deliver); exclusive: changes
  std::unordered_map<std::uint64_t, Hub*> ids;
  std::unordered_map<std::uint64_t, Client> clients;  // regc ones
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

// Function pointer casts between the 1v0 and 2v1 callback types, through
// void (*)(), the type GCC's -Wcast-function-type allows: a 2v1 callback is
// stored in a 1v0-typed slot and always cast back before it is called.
template <typename To, typename From>
To fn_cast(From f) {
  return reinterpret_cast<To>(reinterpret_cast<void (*)()>(f));
}

// The context of a regc registration (nullptr for any other id).
void* context_of(std::uint64_t id) {
  if (!(id & kCtxIdBit)) return nullptr;
  Table& t = table();
  std::shared_lock<RwLock> lock(t.mu);
  auto it = t.clients.find(id);
  return it == t.clients.end() ? nullptr : it->second.context;
}

// A client callback, called as its registration wants it: with the
// context as the last argument for a regc one (whose callbacks were stored
// cast to the 1v0 types). Never under a lock (context_of takes the table's).
int invoke_decode(std::uint64_t id, DSS_decoder_1v0_t d, lua_State* L, void* data) {
  if (!(id & kCtxIdBit)) return d(L, data, to_utilid(id));
  return fn_cast<DSS_decoder_2v0_t>(d)(L, data, to_utilid(id), context_of(id));
}

int invoke_ret(std::uint64_t id, DSS_return_1v0_t r, lua_State* L, void* data, int garbage) {
  if (!(id & kCtxIdBit)) return r(L, data, to_utilid(id), garbage);
  return fn_cast<DSS_return_2v0_t>(r)(L, data, to_utilid(id), garbage,
                                               context_of(id));
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

// A deadline ms milliseconds from now; false when there is none: ms < 0
// (DSS_TIMEOUT_INFINITE), or ms > kTimeoutMaxMs, too far for the clock
// (steady_clock counts nanoseconds in 64 bits from boot: now plus 100 years
// fits; now plus LONG_MAX milliseconds would overflow).
bool deadline_ms(long long ms, Clock::time_point* out) {
  if (ms < 0 || ms > kTimeoutMaxMs) return false;
  *out = Clock::now() + std::chrono::milliseconds(ms);
  return true;
}

// As deadline_ms, for a timeout in seconds (NaN: none).
bool deadline_in(double seconds, Clock::time_point* out) {
  if (!(seconds >= 0) || seconds > double(kTimeoutMaxMs) / 1000) return false;
  *out = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
  return true;
}

constexpr std::uint32_t kNoSlot = 0xffffffffu;

}  // namespace

Hub::Hub() : free_slot_(kNoSlot) {
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
    for (const Registration& r : regs_) {
      t.ids.erase(r.id);
      t.clients.erase(r.id);
    }
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
  return reg_(libid, cancel, err, nullptr, nullptr, false);
}

void* Hub::regc(void* libid, DSS_cancel_2v0_t cancel, void* context,
                const char* name, int* err) {
  return reg_(libid, fn_cast<DSS_cancel_1v0_t>(cancel), err, context,
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
      if (ctx) id |= kCtxIdBit;
      t.ids.emplace(id, this);
      try {
        if (ctx) t.clients.emplace(id, Client{context, name ? name : ""});
        regs_.push_back(Registration{id, libid, cancel, false});
      } catch (...) {
        t.ids.erase(id);
        t.clients.erase(id);
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

void Hub::lua_thread_here() { lua_thread_.store(my_tag(), std::memory_order_relaxed); }

// A wait with no limit would never end on the Lua thread: draining now, or
// between two drains (it last ran poll/dispatch/wait; while it waits here
// nothing runs them).
bool Hub::would_deadlock(bool timed) const {
  std::uintptr_t me = my_tag();
  if (drainer_.load(std::memory_order_relaxed) == me) return true;
  return !timed && lua_thread_.load(std::memory_order_relaxed) == me;
}

void Hub::drain_enter() {
  if (drain_depth_++ == 0) {
    std::uintptr_t me = my_tag();
    drainer_.store(me, std::memory_order_relaxed);
    if (lua_thread_.load(std::memory_order_relaxed) != me)
      lua_thread_.store(me, std::memory_order_relaxed);
  }
}

void Hub::drain_leave() {
  if (--drain_depth_ == 0) drainer_.store(0, std::memory_order_relaxed);
  flush_room();
  // Entries killed since the reservation was made (unreg, a timeout) may
  // have emptied the queue while the killer could not tell: settle and
  // look, under the lock (see after_kills_locked; the read-modify-write,
  // not a plain load, is what orders it with the killer's).
  if (kills_.fetch_add(0, std::memory_order_acq_rel) != seen_kills_) extend();
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

int Hub::deliverc(void* utilid, DSS_decoder_2v0_t decode, DSS_return_2v0_t ret,
                  void* data, unsigned flags, long timeout_ms) {
  return deliver2_(utilid, fn_cast<DSS_decoder_1v0_t>(decode),
                   fn_cast<DSS_return_1v0_t>(ret), data, flags,
                   timeout_ms, true, true);
}

int Hub::deliver2_(void* utilid, DSS_decoder_1v0_t decode,
                   DSS_return_1v0_t ret, void* data, unsigned flags,
                   long timeout_ms, bool v2, bool ctx) {
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
    // The callbacks' types must be the registration's.
    if (bool(id & kCtxIdBit) != ctx) return DSS_ERR_INVALID_ARGUMENT;
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
  bool timed = deadline_ms(timeout_ms, &deadline);
  std::size_t depth;
  bool send;
  std::unique_lock<std::mutex> lock(mu_);
  if (state() != State::running) return DSS_ERR_NOT_STARTED;
  if (!registered_locked(id)) return DSS_ERR_INVALID_UTILID;
  if (ret && would_deadlock(timed)) return DSS_ERR_WOULD_DEADLOCK;
  if (max_ && size_locked() >= max_) {
    // Full: wait for room (1v0 always; 2v0 unless told not to).
    if ((flags & DSS_DELIVER_NOWAIT) || timeout_ms == 0) {
      ++rejected_;
      return DSS_ERR_QUEUE_FULL;
    }
    if (would_deadlock(timed)) return DSS_ERR_WOULD_DEADLOCK;
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
    nb->seq = ++block_seq_;
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

// --- the item's steps -------------------------------------------------------

void Hub::move(Blocking& b, St from, St to) {
  // Each step of the lifecycle comes from exactly one state (see Blocking);
  // anything else is a bug in the core, not something a client can cause.
  if (b.st != from) {
    std::fprintf(stderr, "darksidesync: item state %d, expected %d (to %d)\n",
                 int(b.st), int(from), int(to));
    std::abort();
  }
  b.st = to;
}

// Waits (under the lock) until a blocking item ends; past the deadline,
// ends it by cancellation on this thread if it is queued or parked.
int Hub::wait_blocking(std::unique_lock<std::mutex>& lock, Blocking& b,
                       bool timed, Clock::time_point deadline) {
  for (;;) {
    if (b.st == St::done) return b.cancelled ? DSS_ERR_CANCELLED : DSS_SUCCESS;
    if (!b.expired && timed && Clock::now() >= deadline) b.expired = true;
    if (!b.expired) {
      if (timed) b.cv.wait_until(lock, deadline);
      else b.cv.wait(lock);
      continue;
    }
    bool queued = b.st == St::queued;
    if (queued) {
      std::uint64_t expect = b.id | kBlockingBit;
      if (!b.entry->id.compare_exchange_strong(expect, 0)) queued = false;
    }
    if (queued) {
      b.entry = nullptr;
      move(b, St::queued, St::cancelling);
      after_kills_locked(1);
    } else if (b.st == St::parked) {
      ticket_drop_locked(b.ticket);
      move(b, St::parked, St::cancelling);
    } else {
      b.cv.wait(lock);  // taken or returning: its callback is running
      continue;
    }
    ++timedout_;
    lock.unlock();
    if (queued) invoke_decode(b.id, b.decode, nullptr, b.data);
    else invoke_ret(b.id, b.ret, nullptr, b.data, 0);
    lock.lock();
    move(b, St::cancelling, St::done);
    return DSS_ERR_TIMEOUT;
  }
}

// Under the lock: the queue just became non-empty.
void Hub::signal_locked() {
  signalled_ = true;
  arm_fd_locked();
}

// Under the lock: makes the fd readable (once: it stays so until reset).
void Hub::arm_fd_locked() {
  if (efd_w_ < 0 || fd_armed_) return;
  fd_armed_ = true;
#ifdef __linux__
  std::uint64_t one = 1;
  ssize_t n = ::write(efd_w_, &one, sizeof one);
#else
  char one = 1;
  ssize_t n = ::write(efd_w_, &one, 1);
#endif
  (void)n;  // EAGAIN: already readable
  if (fd_handed_out_) notified_.fetch_add(1, std::memory_order_relaxed);
}

// Under the lock: the queue is empty.
void Hub::reset_locked() {
  signalled_ = false;
  if (efd_ < 0 || !fd_armed_) return;
  fd_armed_ = false;
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

int Hub::fd_(bool handed_out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (handed_out && !fd_handed_out_) {
    fd_handed_out_ = true;
    // Made earlier by wait() and readable now: that wake-up counts from now.
    if (efd_ >= 0 && fd_armed_) notified_.fetch_add(1, std::memory_order_relaxed);
  }
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
  if (size_locked() > 0) arm_fd_locked();
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
  int level = push_inflight();
  for (;;) {
    while (cblock_ && (cblock_ != lim_block_ || cpos_ < lim_end_)) {
      if (cpos_ == kEntries) {
        cblock_ = cblock_->next;  // linked before the reservation was made
        cpos_ = 0;
        continue;
      }
      Entry& e = cblock_->e[cpos_++];
      std::uint64_t id = e.id.load(std::memory_order_relaxed);
      if (!id) continue;  // killed by unreg, close or a timeout
      // Published before the claim: whoever then fails to kill this entry
      // (unreg) reads it after (the claim releases it, the failed kill
      // acquires it) and waits for us to be done with the item.
      set_inflight(level, id & ~kBlockingBit);
      id = e.id.exchange(0, std::memory_order_acq_rel);
      if (!id) continue;  // killed a moment ago
      Taken t = taken_of(e, id);
      t.level = level;
      unsettled_.store(unsettled_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
      if (t.blk) {
        std::lock_guard<std::mutex> lock(mu_);
        move(*t.blk, St::queued, St::taken);
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
    if (!extend()) {
      pop_inflight(level);
      return Taken{};
    }
  }
}

int Hub::call_decoder(const Taken& item, lua_State* L) {
  ++decoded_;
  return invoke_decode(item.id, item.decode, L, item.data);
}

TicketId Hub::settle(const Taken& item, int n) {
  Blocking* b = item.blk;
  if (!b || n <= 0) {
    finish(item);
    return 0;
  }
  TicketId t = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state() == State::running && registered_locked(item.id))
      t = ticket_put_locked(b);
    if (t) {
      move(*b, St::taken, St::parked);
      if (b->expired) b->cv.notify_one();  // it may end it now
    } else {
      move(*b, St::taken, St::cancelling);
    }
  }
  if (!t) {
    // Unregistered (or closing, or no memory for a ticket) while it was
    // being decoded: it ends by cancellation, here.
    invoke_ret(item.id, b->ret, nullptr, b->data, 0);
    std::lock_guard<std::mutex> lock(mu_);
    ++cancelled_;
    b->cancelled = true;
    move(*b, St::cancelling, St::done);
    b->cv.notify_one();
  }
  pop_inflight(item.level);
  return t;
}

void Hub::finish(const Taken& item) {
  if (Blocking* b = item.blk) {
    // The record lives on the waiting producer's stack: notify under the
    // lock so the producer cannot return (and pop its stack) before we are
    // done.
    std::lock_guard<std::mutex> lock(mu_);
    move(*b, St::taken, St::done);
    b->cv.notify_one();
  }
  pop_inflight(item.level);
}

Blocking* Hub::claim(TicketId ticket) {
  int level = push_inflight();
  std::lock_guard<std::mutex> lock(mu_);
  Blocking* b = ticket_get_locked(ticket);
  if (!b) {
    pop_inflight(level);
    return nullptr;
  }
  ticket_drop_locked(ticket);
  move(*b, St::parked, St::returning);
  // Under the lock, so an unreg that did not find it parked sees this.
  set_inflight(level, b->id);
  b->level = static_cast<unsigned char>(level);
  return b;
}

int Hub::call_return(Blocking* b, lua_State* L, int garbage) {
  ++returned_;
  return invoke_ret(b->id, b->ret, L, b->data, garbage);
}

void Hub::finish_returned(Blocking* b) {
  int level;
  {
    std::lock_guard<std::mutex> lock(mu_);
    level = b->level;  // b may be gone once the lock is let go
    move(*b, St::returning, St::done);
    b->cv.notify_one();
  }
  pop_inflight(level);
}

bool Hub::pending(TicketId ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  return ticket_get_locked(ticket) != nullptr;
}

// The in-flight levels nest as the Lua thread's C frames do: an item taken
// or claimed at level k ends (settle, finish, finish_returned) before the
// one at level k - 1 does, on every path, errors included (the binding runs
// every client callback under a pcall and ends the item after it).
int Hub::push_inflight() {
  std::uintptr_t me = my_tag();
  if (inflight_thread_.load(std::memory_order_relaxed) != me)
    inflight_thread_.store(me, std::memory_order_relaxed);
  int level = inflight_depth_++;
  if (level >= kLevels) inflight_over_.fetch_add(1, std::memory_order_relaxed);
  return level;
}

void Hub::set_inflight(int level, std::uint64_t id) {
  if (level < kLevels) inflight_[level].store(id, std::memory_order_relaxed);
}

void Hub::pop_inflight(int level) {
  inflight_depth_ = level;
  if (level >= kLevels) inflight_over_.fetch_sub(1, std::memory_order_release);
  else if (inflight_[level].load(std::memory_order_relaxed) != 0)
    inflight_[level].store(0, std::memory_order_release);
  else return;
  // An unreg waiting for us; if this read misses one that just arrived, it
  // finds the level clear within its bounded wait (see quiesce).
  if (quiet_waiters_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mu_);
    quiet_cv_.notify_all();
  }
}

bool Hub::inflight_has(std::uint64_t id) const {
  if (inflight_over_.load(std::memory_order_acquire)) return true;
  for (const auto& l : inflight_)
    if (l.load(std::memory_order_acquire) == id) return true;
  return false;
}

void Hub::quiesce(std::uint64_t id) {
  std::unique_lock<std::mutex> lock(mu_);
  quiet_waiters_.fetch_add(1, std::memory_order_relaxed);
  // Called from inside one of those callbacks (a decoder or return callback
  // that unregisters its own lib): nothing to wait for but ourselves.
  while (inflight_has(id) &&
         inflight_thread_.load(std::memory_order_relaxed) != my_tag())
    quiet_cv_.wait_for(lock, std::chrono::milliseconds(1));
  quiet_waiters_.fetch_sub(1, std::memory_order_relaxed);
}

// --- the ticket table -------------------------------------------------------

TicketId Hub::ticket_put_locked(Blocking* b) {
  std::uint32_t i = free_slot_;
  if (i != kNoSlot) {
    free_slot_ = slots_[i].next_free;
  } else {
    if (slots_.size() >= kNoSlot - 1) return 0;
    try {
      slots_.push_back(Slot{nullptr, 1, kNoSlot});
    } catch (const std::bad_alloc&) {
      return 0;
    }
    i = std::uint32_t(slots_.size() - 1);
  }
  Slot& s = slots_[i];
  s.item = b;
  ++parked_;
  b->ticket = (TicketId(s.gen) << 32) | (TicketId(i) + 1);
  return b->ticket;
}

Blocking* Hub::ticket_get_locked(TicketId t) const {
  std::uint32_t i = std::uint32_t(t);  // the slot's index + 1
  if (i == 0 || i > slots_.size()) return nullptr;
  const Slot& s = slots_[i - 1];
  if (s.gen != std::uint32_t(t >> 32)) return nullptr;
  return s.item;
}

void Hub::ticket_drop_locked(TicketId t) {
  std::uint32_t i = std::uint32_t(t) - 1;
  Slot& s = slots_[i];
  s.item->ticket = 0;
  s.item = nullptr;
  if (++s.gen == 0) s.gen = 1;
  s.next_free = free_slot_;
  free_slot_ = i;
  --parked_;
}

// --- wait and stats -----------------------------------------------------------

std::size_t Hub::wait(double timeout_s, int intr_fd) {
  Clock::time_point deadline;
  bool timed = deadline_in(timeout_s, &deadline);
  if (intr_fd >= 0 && timeout_s != 0 && fd_(false) >= 0) return wait_fd(timed, deadline, intr_fd);
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

// wait() sleeping in poll(2) on the wake-up fd and intr_fd: a signal
// handler that writes to intr_fd ends the sleep, on whichever thread it
// ran. The fd is made readable when the queue goes non-empty, and reset
// here before each sleep while the queue is empty (kills may have left it
// readable).
std::size_t Hub::wait_fd(bool timed, Clock::time_point deadline, int intr_fd) {
  for (;;) {
    int efd;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (size_locked() > 0 || state() != State::running) return size_locked();
      reset_locked();
      efd = efd_;
    }
    int ms = -1;
    if (timed) {
      auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) return size();
      // Rounded up: never wake before the deadline.
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(left).count();
      ms = int(std::min<long long>((us + 999) / 1000, 86400000LL));
    }
    pollfd p[2] = {{efd, POLLIN, 0}, {intr_fd, POLLIN, 0}};
    int n = ::poll(p, 2, ms);
    if (n > 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))) return size();
  }
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
  if (id & kCtxIdBit) {
    // Its items have all ended: the context is not needed any more.
    Table& t = table();
    std::lock_guard<RwLock> lock(t.mu);
    t.clients.erase(id);
  }
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
  // From here on nothing of id can be queued or parked: end what is, then
  // wait for a callback of id the Lua thread may be running.
  cancel_items(id);
  quiesce(id);
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

void Hub::after_kills_locked(std::size_t killed) {
  count_.store(count_.load(std::memory_order_relaxed) - killed,
               std::memory_order_relaxed);
  // The consumer's count of items taken is its own, read here without a
  // lock: it may be older (smaller) than the truth, which makes the queue
  // look fuller, never emptier. Empty for sure: reset the wake-ups. If it
  // only looks non-empty, the consumer finds out: it stores its count,
  // then does a read-modify-write of kills_ when it leaves its drain; we
  // do ours, then read its count. The two are ordered in kills_'s
  // modification order: either ours comes first and the consumer reads the
  // kill (and settles under the lock, drain_leave), or its comes first and
  // ours reads from it (acquire), and so reads its count. A notice is
  // never lost.
  kills_.fetch_add(1, std::memory_order_acq_rel);
  if (size_locked() == 0) reset_locked();
  if (room_waiters_.load(std::memory_order_relaxed)) room_cv_.notify_all();
}

void Hub::cancel_items(std::uint64_t id) {
  // No allocation on this path: a bounded batch at a time, resuming where
  // the last one stopped -- if that block is still linked and the same one
  // (its address and link number); else from the front: the consumer has
  // passed it then, and every entry before it. New entries of id cannot
  // appear meanwhile (unregistered, or closing), so a restart or a resume
  // in a block restarted in place misses none.
  constexpr std::size_t kBatch = 64;
  Taken batch[kBatch];
  Block* resume = nullptr;
  std::uint32_t resume_seq = 0, resume_at = 0;
  for (;;) {
    std::size_t n = 0;
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Block* b = qhead_;
      std::uint32_t i = 0;
      for (Block* x = qhead_; resume && x; x = x->next) {
        if (x == resume && x->seq == resume_seq) {
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
            resume_seq = b->seq;
            resume_at = i;
            break;
          }
          // Acquire on failure: a claim by the Lua thread that beat us
          // published inflight_ first (see take).
          if (!e.id.compare_exchange_strong(v, 0, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
            continue;
          Taken& t = batch[n++];
          t = taken_of(e, v);
          if (t.blk) {
            move(*t.blk, St::queued, St::cancelling);
            t.blk->entry = nullptr;
          }
          ++killed;
        }
        if (!more) {
          b = b->next;
          i = 0;
        }
      }
      for (std::uint32_t k = 0; parked_ && !more && k < slots_.size(); ++k) {
        Blocking* p = slots_[k].item;
        if (!p || (id && p->id != id)) continue;
        if (n == kBatch) {
          more = true;
          break;
        }
        ticket_drop_locked(p->ticket);  // the Lua side's call becomes a no-op
        move(*p, St::parked, St::cancelling);
        Taken& t = batch[n++];
        t.id = p->id;
        t.decode = nullptr;  // decoded: cancel through ret
        t.data = p->data;
        t.blk = p;
      }
      if (killed) after_kills_locked(killed);
    }
    end_cancelled(batch, n);
    if (!more) return;
  }
}

void Hub::end_cancelled(Taken* items, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) {
    Taken& t = items[k];
    if (t.decode) invoke_decode(t.id, t.decode, nullptr, t.data);
    else invoke_ret(t.id, t.blk->ret, nullptr, t.data, 0);
    std::lock_guard<std::mutex> lock(mu_);
    ++cancelled_;
    if (Blocking* b = t.blk) {
      b->cancelled = true;
      move(*b, St::cancelling, St::done);
      b->cv.notify_one();
    }
  }
}

void Hub::call_cancel(DSS_cancel_1v0_t cancel, void* utilid) {
  std::uint64_t id = id_of(utilid);
  if (!(id & kCtxIdBit)) return cancel(utilid);
  fn_cast<DSS_cancel_2v0_t>(cancel)(utilid, context_of(id));
}

std::size_t Hub::client_name(void* utilid, char* buf, std::size_t n) {
  buf[0] = '\0';
  std::uint64_t id = id_of(utilid);
  if (!(id & kCtxIdBit) || n == 0) return 0;
  Table& t = table();
  std::shared_lock<RwLock> lock(t.mu);
  auto it = t.clients.find(id);
  if (it == t.clients.end()) return 0;
  std::size_t len = it->second.name.copy(buf, n - 1);
  buf[len] = '\0';
  return len;
}

// --- close -----------------------------------------------------------------

void Hub::close(CancelCall call, void* ctx) {
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
    if (call) call(ctx, cancel, utilid);
    else call_cancel(cancel, utilid);
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
  fd_armed_ = false;
  if (efd_ >= 0) ::close(efd_);
  if (efd_w_ >= 0 && efd_w_ != efd_) ::close(efd_w_);
  efd_ = efd_w_ = -1;
}

}  // namespace dss
