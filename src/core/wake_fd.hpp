// wake_fd.hpp -- the fd pair of a wake-up: what one thread writes to make
// another's poll/epoll wait return. An eventfd where there is one (read
// and write ends are the same fd), else a pipe. The hub's notifier and the
// reactor's ready set each make theirs here.
#ifndef DSS_CORE_WAKE_FD_HPP
#define DSS_CORE_WAKE_FD_HPP

namespace dss {

// Opens the pair, both ends non-blocking and close-on-exec: *rd is read
// (and polled), *wr written. 0, or errno (nothing left open).
int open_wake_fds(int* rd, int* wr);

}  // namespace dss

#endif  // DSS_CORE_WAKE_FD_HPP
