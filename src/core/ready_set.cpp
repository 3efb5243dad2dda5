// ready_set.cpp -- see ready_set.hpp.
#include "ready_set.hpp"

#include "wake_fd.hpp"

#include <cerrno>
#include <climits>
#include <ctime>

#include <poll.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/epoll.h>
#include <sys/syscall.h>
#define DSS_HAVE_EPOLL 1
#else
#define DSS_HAVE_EPOLL 0
#endif

namespace dss {

namespace {

constexpr std::uint64_t kInterruptKey = ReadySet::kMaxKey + 1;

// The time left until `deadline`; false when there is no limit (max(), or
// further than a sleeping call can hold: it wakes, finds nothing due, and
// sleeps again).
bool time_left(Clock::time_point deadline, std::chrono::nanoseconds* left) {
  if (deadline == Clock::time_point::max()) return false;
  auto now = Clock::now();
  if (deadline <= now) {
    *left = std::chrono::nanoseconds(0);
    return true;
  }
  auto d = std::chrono::ceil<std::chrono::nanoseconds>(deadline - now);
  if (d > std::chrono::hours(24 * 365)) return false;
  *left = d;
  return true;
}

// Milliseconds, rounded up so that a sleep never ends early; -1: no limit.
int to_ms(bool limit, std::chrono::nanoseconds left) {
  if (!limit) return -1;
  auto ms = (left.count() + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : int(ms);
}

}  // namespace

ReadySet::~ReadySet() { close_all(); }

void ReadySet::close_all() {
  if (epfd_ >= 0) ::close(epfd_);
  if (efd_r_ >= 0) ::close(efd_r_);
  if (efd_w_ >= 0 && efd_w_ != efd_r_) ::close(efd_w_);
  epfd_ = efd_r_ = efd_w_ = -1;
}

int ReadySet::open() {
  if (efd_r_ >= 0) return 0;  // made by an earlier call
  int err = make();
  if (err != 0) close_all();
  return err;
}

int ReadySet::make() {
#if DSS_HAVE_EPOLL
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return errno;
  if (int err = open_wake_fds(&efd_r_, &efd_w_)) return err;
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: reported until drained
  ev.data.u64 = kInterruptKey;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, efd_r_, &ev) != 0) return errno;
#else
  if (int err = open_wake_fds(&efd_r_, &efd_w_)) return err;
#endif
  return 0;
}

// A known fd is re-enabled with MOD; the kernel may have dropped it (the fd
// was closed and maybe reused, against the rule): then ADD. An fd new to us
// that the kernel knows is another key's: EEXIST.
int ReadySet::watch(int fd, std::uint64_t key, bool known) {
#if DSS_HAVE_EPOLL
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.u64 = key;
  int rc = ::epoll_ctl(epfd_, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
  if (rc != 0 && known && errno == ENOENT) rc = ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  return rc == 0 ? 0 : errno;
#else
  (void)fd;
  (void)key;
  (void)known;
  return ENOSYS;
#endif
}

void ReadySet::unwatch(int fd) {
#if DSS_HAVE_EPOLL
  // Closed already (the kernel then dropped it): nothing to do.
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
#else
  (void)fd;
#endif
}

void ReadySet::interrupt() {
#if DSS_HAVE_EPOLL
  std::uint64_t one = 1;
  ssize_t n = ::write(efd_w_, &one, sizeof one);
#else
  char one = 1;
  ssize_t n = ::write(efd_w_, &one, 1);
#endif
  (void)n;  // full (EAGAIN): an interrupt is pending anyway
}

void ReadySet::drain() {
  char buf[64];
  while (::read(efd_r_, buf, sizeof buf) > 0) {
  }
}

int ReadySet::wait(Clock::time_point deadline, std::uint64_t* keys) {
  int n = wait_events(deadline, keys);
  int out = 0;
  for (int i = 0; i < n; ++i) {
    if (keys[i] == kInterruptKey) drain();
    else keys[out++] = keys[i];
  }
  return out;
}

// epoll_pwait2 (nanoseconds) where the kernel has it, else epoll_wait
// (milliseconds, rounded up). The raw system call: glibc's wrapper may be
// missing on older systems even where the kernel has it.
int ReadySet::wait_events(Clock::time_point deadline, std::uint64_t* keys) {
  std::chrono::nanoseconds left{};
  bool limit = time_left(deadline, &left);
#if DSS_HAVE_EPOLL
  epoll_event evs[kBatch];
  int n = -1;
  bool done = false;
#ifdef SYS_epoll_pwait2
  if (pwait2_) {
    timespec ts{};
    ts.tv_sec = time_t(left.count() / 1000000000);
    ts.tv_nsec = long(left.count() % 1000000000);
    n = int(::syscall(SYS_epoll_pwait2, epfd_, evs, kBatch, limit ? &ts : nullptr, nullptr, 0));
    if (n < 0 && errno == ENOSYS) pwait2_ = false;
    else done = true;
  }
#endif
  if (!done) n = ::epoll_wait(epfd_, evs, kBatch, to_ms(limit, left));
  for (int i = 0; i < n; ++i) keys[i] = evs[i].data.u64;
  return n < 0 ? 0 : n;
#else
  (void)pwait2_;
  pollfd p{};
  p.fd = efd_r_;
  p.events = POLLIN;
  int n = ::poll(&p, 1, to_ms(limit, left));
  if (n > 0) keys[0] = kInterruptKey;
  return n < 0 ? 0 : n;
#endif
}

}  // namespace dss
