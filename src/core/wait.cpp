// wait.cpp -- the Lua thread's sleep until items arrive: on the hub's
// condition variable, or in poll(2) on the wake-up fd when it must also
// wake for an interrupt fd.
#include "hub.hpp"

#include <poll.h>

#include <algorithm>

namespace dss {

std::size_t Hub::wait(double timeout_s, int intr_fd) {
  Clock::time_point deadline;
  bool timed = deadline_in(timeout_s, &deadline);
  if (intr_fd >= 0 && timeout_s != 0 && fd_(false) >= 0)
    return wait_fd(timed, deadline, intr_fd);
  std::unique_lock<std::mutex> lock(q_.mu);
  if (q_.size() > 0 || timeout_s == 0) return q_.size();
  // A delivery clears the waiting flag when it wakes us: set it again
  // before every wait, spurious wake-ups included.
  while (q_.size() == 0 && state() == State::running) {
    notify_.set_waiting_locked(true);
    if (!timed) {
      notify_.cv.wait(lock);
    } else if (notify_.cv.wait_until(lock, deadline) == std::cv_status::timeout) {
      break;
    }
  }
  notify_.set_waiting_locked(false);
  return q_.size();
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
      std::lock_guard<std::mutex> lock(q_.mu);
      if (q_.size() > 0 || state() != State::running) return q_.size();
      notify_.reset_locked();
      efd = notify_.fd_now_locked();
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

}  // namespace dss
