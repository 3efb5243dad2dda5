// poller.hpp -- fd readiness for the fiber scheduler: epoll on Linux, poll(2)
// where epoll is missing or when asked for. No Lua in here.
//
// One poller serves one Lua state's scheduler: the fds its fibers wait on,
// the hub's wake-up fd among them, and the next timer as the timeout of
// wait(). Not thread-safe: one thread adds, deletes and waits.
#ifndef DSS_CORE_POLLER_HPP
#define DSS_CORE_POLLER_HPP

#include <poll.h>

#include <cstddef>
#include <unordered_map>
#include <vector>

namespace dss {

class Poller {
 public:
  // Event bits: Linux's epoll values (poll(2)'s are the same there), so a
  // mask reads the same whichever backend made it.
  static constexpr unsigned kIn = 0x001;
  static constexpr unsigned kPri = 0x002;
  static constexpr unsigned kOut = 0x004;
  static constexpr unsigned kErr = 0x008;
  static constexpr unsigned kHup = 0x010;
  static constexpr unsigned kRdHup = 0x2000;
  static constexpr unsigned kAll = kIn | kPri | kOut | kErr | kHup | kRdHup;

  enum class Backend { Auto, Epoll, Poll };

  struct Event {
    int fd;
    unsigned events;
  };

  // Backend::Auto is epoll where the system has it. error() tells whether
  // the backend could be made (0, or the errno of epoll_create1).
  explicit Poller(Backend b = Backend::Auto) noexcept;
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  int error() const { return error_; }
  const char* backend() const { return epfd_ >= 0 ? "epoll" : "poll"; }
  // The epoll set's own fd (readable while an armed fd is ready: a
  // session parks on it), or -1 for the poll backend.
  int epoll_fd() const { return epfd_; }

  // add(fd, events, oneshot): ORs events (kIn, kOut, kPri, kRdHup) into fd's
  // interest. A one-shot interest is reported once and then dropped (the fd
  // stays known, so the next add is cheap); a persistent one is reported on
  // every wait while it holds. The last add's mode applies to the whole fd.
  // Returns 0 or an errno (EBADF, EPERM for a regular file under epoll,
  // EINVAL for a negative fd or no events, ENOMEM).
  int add(int fd, unsigned events, bool oneshot) noexcept { return arm(fd, events, oneshot, false); }

  // set(fd, events, oneshot): as add, but events replace fd's interest.
  int set(int fd, unsigned events, bool oneshot) noexcept { return arm(fd, events, oneshot, true); }

  // del(fd): forgets fd (call it before closing fd). 0, or ENOENT when fd
  // is not known.
  int del(int fd) noexcept;

  // wait(timeout_s): sleeps until one of the fds is ready or timeout_s
  // seconds passed (negative: no limit; nanosecond precision where the
  // kernel has it, else rounded up to the millisecond, so never early).
  // The events are in events() afterwards. Returns their number, 0 on
  // timeout or when a signal interrupted the sleep (errno EINTR then), or
  // -errno on failure.
  int wait(double timeout_s) noexcept;
  const std::vector<Event>& events() const { return out_; }

  // The fds with an interest waiting to fire.
  std::size_t armed() const { return armed_; }

 private:
  struct Entry {
    unsigned events = 0;   // interest; 0 once a one-shot interest fired
    bool oneshot = false;
    bool in_kernel = false;  // epoll: registered with epoll_ctl; poll: fd checked
  };
  int arm(int fd, unsigned events, bool oneshot, bool replace) noexcept;
  int wait_epoll(double timeout_s);
  int wait_poll(double timeout_s);
  void fired(int fd, unsigned revents);

  int error_ = 0;
  int epfd_ = -1;
  std::unordered_map<int, Entry> fds_;
  std::size_t armed_ = 0;  // entries with events != 0
  std::vector<Event> out_;
  std::vector<unsigned char> evbuf_;  // epoll_event array (raw bytes)
  std::vector<pollfd> pfds_;          // poll(2): rebuilt per wait
  bool pwait2_ = true;                // epoll_pwait2 not yet found missing
};

}  // namespace dss

#endif
