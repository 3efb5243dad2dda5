// wake_fd.cpp -- see wake_fd.hpp.
#include "wake_fd.hpp"

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

namespace dss {

int open_wake_fds(int* rd, int* wr) {
#ifdef __linux__
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return errno;
  *rd = *wr = fd;
#else
  int p[2];
  if (::pipe(p) != 0) return errno;
  for (int f : p) {
    ::fcntl(f, F_SETFL, ::fcntl(f, F_GETFL) | O_NONBLOCK);
    ::fcntl(f, F_SETFD, FD_CLOEXEC);
  }
  *rd = p[0];
  *wr = p[1];
#endif
  return 0;
}

}  // namespace dss
