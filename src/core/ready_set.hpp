// ready_set.hpp -- the reactor's kernel side: a set of fds each watched
// once for readability (epoll, EPOLLONESHOT), reported by a 64-bit key,
// and an eventfd that interrupts the wait.
//
// One thread waits; any thread may watch, unwatch and interrupt meanwhile
// (epoll takes a change made during epoll_wait into account at once: a
// newly watched fd that is ready ends the wait without an interrupt).
// Elsewhere than on Linux there is no epoll: watch() answers ENOSYS, and
// wait() sleeps on a pipe, so that timers alone still work.
#ifndef DSS_CORE_READY_SET_HPP
#define DSS_CORE_READY_SET_HPP

#include "clock.hpp"

#include <cstdint>

namespace dss {

class ReadySet {
 public:
  // Keys at most kMaxKey; the interrupt uses one above.
  static constexpr std::uint64_t kMaxKey = ~std::uint64_t(0) - 1;
  // Keys reported by one wait, at most.
  static constexpr int kBatch = 256;

  ReadySet() = default;
  ~ReadySet();
  ReadySet(const ReadySet&) = delete;
  ReadySet& operator=(const ReadySet&) = delete;

  // Makes the kernel objects (once: again after a failure): 0, or an
  // errno.
  int open();

  // Watches fd once for readability (an error or hang-up counts): reported
  // by `key` on the first wait that finds it ready, then not again until
  // watched again. `known`: fd was watched before (and not unwatched), so
  // this re-enables it with the new key. 0, or an errno (EBADF; EPERM for a
  // regular file; EEXIST when fd is watched under another key; ENOSYS).
  int watch(int fd, std::uint64_t key, bool known);
  // Forgets fd (call before closing it). A report of it may be on its way
  // to a wait that returned already: keys tell a stale one.
  void unwatch(int fd);
  // Ends the current or the next wait early. Async-signal-safe.
  void interrupt();
  // Sleeps until `deadline` (Clock::time_point::max(): no limit; never
  // returns early for it), a watched fd is ready, or an interrupt; stores
  // the keys of the ready fds (at most kBatch) and returns their number.
  // Interrupts are consumed, not reported. 0 on EINTR too.
  int wait(Clock::time_point deadline, std::uint64_t* keys);

 private:
  int make();
  void close_all();
  int wait_events(Clock::time_point deadline, std::uint64_t* keys);
  void drain();

  int epfd_ = -1;
  int efd_r_ = -1;  // the interrupt: eventfd, or a pipe's read end
  int efd_w_ = -1;  // its write end (the eventfd again)
  bool pwait2_ = true;  // epoll_pwait2 not yet found missing
};

}  // namespace dss

#endif  // DSS_CORE_READY_SET_HPP
