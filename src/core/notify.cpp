// notify.cpp -- see notify.hpp.
#include "notify.hpp"

#include "wake_fd.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace dss {

Notifier::~Notifier() { reset_locked_all(); }

void Notifier::reset_locked_all() {
  close_fd_locked();
  fd_handed_out_ = lua_waiting_ = false;
  hook_ = nullptr;
  hook_ctx_ = nullptr;
  hook_release_ = nullptr;
  port_.store(0, std::memory_order_release);
  coalesce_.store(false, std::memory_order_relaxed);
  int fd = sock_.exchange(-1);
  if (fd >= 0) ::close(fd);
  notified_.store(0, std::memory_order_relaxed);
  notifyfailed_.store(0, std::memory_order_relaxed);
}

Notifier::Post Notifier::queued_locked(Udp u) {
  Post p;
  bool transition = !signalled_;
  if (transition) {
    signalled_ = true;
    arm_fd_locked();
    p.hook = hook_;
    p.hook_ctx = hook_ctx_;
  }
  // The Lua thread asleep in wait() is woken once, after the unlock (so
  // that it does not wake up only to wait for the lock).
  p.wake = lua_waiting_;
  lua_waiting_ = false;
  p.send = u.port != 0 && (transition || !u.coalesce);
  p.port = u.port;
  return p;
}

int Notifier::post(const Post& p) {
  if (p.wake) cv.notify_one();
  if (p.hook) p.hook(p.hook_ctx);
  return p.send ? send_udp(p.port, p.depth) : DSS_SUCCESS;
}

// Makes the fd readable (once: it stays so until reset).
void Notifier::arm_fd_locked() {
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

void Notifier::reset_locked() {
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

int Notifier::fd_locked(bool handed_out, bool running, bool nonempty) {
  if (handed_out && !fd_handed_out_) {
    fd_handed_out_ = true;
    // Made earlier by wait() and readable now: that wake-up counts from now.
    if (efd_ >= 0 && fd_armed_) notified_.fetch_add(1, std::memory_order_relaxed);
  }
  if (efd_ >= 0) return efd_;
  if (!running) {
    errno = EBADF;
    return -1;
  }
  if (open_wake_fds(&efd_, &efd_w_) != 0) return -1;
  if (nonempty) arm_fd_locked();
  return efd_;
}

void Notifier::close_fd_locked() {
  signalled_ = false;
  fd_armed_ = false;
  if (efd_ >= 0) ::close(efd_);
  if (efd_w_ >= 0 && efd_w_ != efd_) ::close(efd_w_);
  efd_ = efd_w_ = -1;
}

// The socket outlives every delivery that decided to send (only a
// recycled hub's reset closes it), so a port set to 0 meanwhile does not
// stop this datagram: it was decided for an item queued before.
int Notifier::send_udp(int port, std::size_t count) {
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
  (rc == DSS_SUCCESS ? notified_ : notifyfailed_).fetch_add(1, std::memory_order_relaxed);
  return rc;
}

bool Notifier::set_port(int port, bool coalesce) {
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

}  // namespace dss
