// poller.cpp -- see poller.hpp.
#include "poller.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <ctime>
#include <new>

#include <fcntl.h>

#ifdef __linux__
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DSS_HAVE_EPOLL 1
#else
#define DSS_HAVE_EPOLL 0
#endif

namespace dss {

namespace {

#if DSS_HAVE_EPOLL
static_assert(Poller::kIn == EPOLLIN && Poller::kPri == EPOLLPRI && Poller::kOut == EPOLLOUT &&
                  Poller::kErr == EPOLLERR && Poller::kHup == EPOLLHUP &&
                  Poller::kRdHup == EPOLLRDHUP,
              "the event bits are epoll's");
#endif

// poll(2)'s bits from ours and back (the same numbers on Linux; spelled out
// for the systems where they are not).
short to_poll(unsigned ev) {
  short r = 0;
  if (ev & Poller::kIn) r |= POLLIN;
  if (ev & Poller::kPri) r |= POLLPRI;
  if (ev & Poller::kOut) r |= POLLOUT;
#ifdef POLLRDHUP
  if (ev & Poller::kRdHup) r |= POLLRDHUP;
#endif
  return r;
}

unsigned from_poll(short rev) {
  unsigned r = 0;
  if (rev & POLLIN) r |= Poller::kIn;
  if (rev & POLLPRI) r |= Poller::kPri;
  if (rev & POLLOUT) r |= Poller::kOut;
  if (rev & (POLLERR | POLLNVAL)) r |= Poller::kErr;
  if (rev & POLLHUP) r |= Poller::kHup;
#ifdef POLLRDHUP
  if (rev & POLLRDHUP) r |= Poller::kRdHup;
#endif
  return r;
}

// Seconds to a timespec, for the sleeping calls; false when there is no
// limit (negative, NaN or beyond what a time_t holds).
bool to_timespec(double s, timespec* ts) {
  if (!(s >= 0) || s > double(INT_MAX)) return false;
  double whole = std::floor(s);
  ts->tv_sec = time_t(whole);
  long ns = long(std::ceil((s - whole) * 1e9));
  if (ns >= 1000000000L) {
    ts->tv_sec += 1;
    ns = 0;
  }
  ts->tv_nsec = ns;
  return true;
}

// Seconds to milliseconds, rounded up so that a sleep never ends early; -1
// for no limit.
int to_ms(double s) {
  if (!(s >= 0) || s > double(INT_MAX) / 1000.0) return -1;
  return int(std::ceil(s * 1000.0));
}

}  // namespace

Poller::Poller(Backend b) noexcept {
#if DSS_HAVE_EPOLL
  if (b != Backend::Poll) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) {
      if (b == Backend::Epoll) error_ = errno;
      epfd_ = -1;  // Auto: poll(2) instead
    }
  }
#else
  if (b == Backend::Epoll) error_ = ENOSYS;
#endif
}

Poller::~Poller() {
#if DSS_HAVE_EPOLL
  if (epfd_ >= 0) close(epfd_);
#endif
}

int Poller::arm(int fd, unsigned events, bool oneshot, bool replace) noexcept {
  events &= kIn | kPri | kOut | kRdHup;
  if (fd < 0 || events == 0) return EINVAL;
  Entry* e;
  try {
    e = &fds_[fd];
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
  if (epfd_ < 0 && !e->in_kernel) {
    // New to poll(2), which would only say POLLNVAL later: check it now.
    if (fcntl(fd, F_GETFD) < 0) {
      int err = errno;
      fds_.erase(fd);
      return err;
    }
    e->in_kernel = true;  // for poll(2): checked
  }
  unsigned want = e->events | events;
  if (replace || e->oneshot != oneshot) want = events;  // a change of mode starts afresh
#if DSS_HAVE_EPOLL
  if (epfd_ >= 0) {
    if (!(e->in_kernel && want == e->events && e->oneshot == oneshot)) {
      epoll_event ev{};
      ev.events = want | (oneshot ? unsigned(EPOLLONESHOT) : 0u);
      ev.data.fd = fd;
      // Known to the kernel: modify; the kernel may have dropped it (the fd
      // was closed, maybe reused): add. Unknown: add; if the kernel knew it
      // after all (an fd deleted from us but not from it), modify.
      int op = e->in_kernel ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
      int rc = epoll_ctl(epfd_, op, fd, &ev);
      if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
        rc = epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
      else if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
        rc = epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
      if (rc != 0) {
        int err = errno;
        if (!e->in_kernel) fds_.erase(fd);
        return err;
      }
      e->in_kernel = true;
    }
  }
#endif
  if (e->events == 0) ++armed_;
  e->events = want;
  e->oneshot = oneshot;
  return 0;
}

int Poller::del(int fd) noexcept {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return ENOENT;
#if DSS_HAVE_EPOLL
  // The fd may be closed already (the kernel then dropped it): ignore.
  if (epfd_ >= 0 && it->second.in_kernel) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
#endif
  if (it->second.events != 0) --armed_;
  fds_.erase(it);
  return 0;
}

void Poller::fired(int fd, unsigned revents) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || it->second.events == 0) return;  // deleted meanwhile
  Entry& e = it->second;
  out_.push_back(Event{fd, revents});
  if (e.oneshot) {  // epoll disabled it; poll(2) leaves it out
    e.events = 0;
    --armed_;
  }
}

int Poller::wait(double timeout_s) noexcept {
  out_.clear();
  try {
    return epfd_ >= 0 ? wait_epoll(timeout_s) : wait_poll(timeout_s);
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  }
}

int Poller::wait_epoll(double timeout_s) {
#if DSS_HAVE_EPOLL
  std::size_t max = fds_.size() < 64 ? 64 : fds_.size();
  if (max > 4096) max = 4096;
  if (evbuf_.size() < max * sizeof(epoll_event)) evbuf_.resize(max * sizeof(epoll_event));
  auto* evs = reinterpret_cast<epoll_event*>(evbuf_.data());
  int n = -1;
  bool done = false;
#ifdef SYS_epoll_pwait2
  if (pwait2_) {
    timespec ts;
    bool limit = to_timespec(timeout_s, &ts);
    // The raw system call: glibc's wrapper may be missing on older systems
    // even where the kernel has it.
    n = int(syscall(SYS_epoll_pwait2, epfd_, evs, int(max), limit ? &ts : nullptr, nullptr, 0));
    if (n < 0 && errno == ENOSYS)
      pwait2_ = false;
    else
      done = true;
  }
#endif
  if (!done) n = epoll_wait(epfd_, evs, int(max), to_ms(timeout_s));
  if (n < 0) return errno == EINTR ? 0 : -errno;
  out_.reserve(std::size_t(n));
  for (int i = 0; i < n; ++i) fired(evs[i].data.fd, evs[i].events & kAll);
  return int(out_.size());
#else
  (void)timeout_s;
  return -ENOSYS;
#endif
}

int Poller::wait_poll(double timeout_s) {
  pfds_.clear();
  for (const auto& kv : fds_) {
    if (kv.second.events == 0) continue;
    pollfd p{};
    p.fd = kv.first;
    p.events = to_poll(kv.second.events);
    pfds_.push_back(p);
  }
  int n;
#if defined(__linux__)
  timespec ts;
  bool limit = to_timespec(timeout_s, &ts);
  n = ppoll(pfds_.data(), nfds_t(pfds_.size()), limit ? &ts : nullptr, nullptr);
#else
  n = poll(pfds_.data(), nfds_t(pfds_.size()), to_ms(timeout_s));
#endif
  if (n < 0) return errno == EINTR ? 0 : -errno;
  out_.reserve(std::size_t(n));
  for (const pollfd& p : pfds_)
    if (p.revents != 0) fired(p.fd, from_poll(p.revents));
  return int(out_.size());
}

}  // namespace dss
