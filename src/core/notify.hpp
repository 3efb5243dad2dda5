// notify.hpp -- the wake-ups a hub sends when its queue goes from empty to
// non-empty: the condition variable of the Lua thread asleep in wait(), the
// wake-up fd (an eventfd, or a pipe elsewhere: readable exactly while the
// queue is non-empty), and UDP datagrams to 127.0.0.1:port. Members marked
// "locked" are under the hub's lock; sending (the condition variable, the
// datagram) happens after a delivery let that lock go.
#ifndef DSS_CORE_NOTIFY_HPP
#define DSS_CORE_NOTIFY_HPP

#define DSS_NO_LUA_H
#include "darksidesync_api.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>

namespace dss {

class Notifier {
 public:
  Notifier() = default;
  ~Notifier();  // closes the fd and the socket
  // Back to a new notifier's state (locked; its hub is being recycled and
  // no delivery holds a reference, so none is about to send).
  void reset_locked_all();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // What a delivery leaves to do once it let the lock go.
  struct Post {
    bool wake = false, send = false;
    int port = 0;           // the datagram's port (send)
    std::size_t depth = 0;  // its count
    void (*hook)(void*) = nullptr;  // the wake hook to call, and its ctx
    void* hook_ctx = nullptr;
  };
  // The UDP settings, read by a delivery (locked). Changed only under the
  // same lock (Hub::set_port): a delivery's item and its datagram decision
  // are on one side of a change.
  struct Udp {
    int port;
    bool coalesce;
  };
  Udp udp_locked() const {
    return {port_.load(std::memory_order_acquire), coalesce_.load(std::memory_order_acquire)};
  }
  // A delivery queued an item (locked; u: read before it was visible):
  // what to send once the lock is let go. With a datagram to send, the
  // caller fills in the depth.
  Post queued_locked(Udp u);
  // Sends it (no lock): wakes the Lua thread in wait(), sends the datagram.
  int post(const Post& p);

  // The queue is empty (locked): the fd stops being readable.
  void reset_locked();

  // --- the Lua thread asleep in wait() (locked) ----------------------------
  std::condition_variable cv;
  void set_waiting_locked(bool w) { lua_waiting_ = w; }

  // --- the fd --------------------------------------------------------------------
  // The wake-up fd, made on first use (locked; nonempty: the queue now);
  // -1 (errno set) when it cannot be made or closing. Once handed_out, its
  // wake-ups count as notified.
  int fd_locked(bool handed_out, bool running, bool nonempty);
  int fd_now_locked() const { return efd_; }
  void close_fd_locked();

  // --- the wake hook ----------------------------------------------------------
  // fn(ctx), called (no lock) on each empty -> non-empty transition, as the
  // fd is made readable: how a session parked on the thread pool learns
  // that items arrived for it. nullptr removes it (locked). release(ctx),
  // if given, is the owner's: called once the hub is recycled (see
  // Hub::set_wake_hook).
  void set_hook_locked(void (*fn)(void*), void* ctx, void (*release)(void*)) {
    hook_ = fn;
    hook_ctx_ = ctx;
    hook_release_ = release;
  }
  // The release to call for the hook's context (locked; once: it is
  // forgotten here), or nullptr.
  void (*take_hook_release_locked(void** ctx))(void*) {
    void (*r)(void*) = hook_release_;
    *ctx = hook_ctx_;
    hook_release_ = nullptr;
    return r;
  }

  // --- UDP -----------------------------------------------------------------------
  // 0 disables; 1..65535 sends " <count>" to 127.0.0.1:port per item
  // (coalesce: only when the queue goes from empty to non-empty). False
  // when a socket could not be created, or port is out of range.
  bool set_port(int port, bool coalesce);  // locked (Hub::set_port)
  int port() const { return port_.load(std::memory_order_acquire); }
  bool coalesce() const { return coalesce_.load(std::memory_order_acquire); }

  std::uint64_t notified() const { return notified_.load(std::memory_order_relaxed); }
  std::uint64_t notifyfailed() const {
    return notifyfailed_.load(std::memory_order_relaxed);
  }

 private:
  void arm_fd_locked();
  int send_udp(int port, std::size_t count);

  // --- read by every delivery, written on transitions (locked) ----------------
  bool signalled_ = false;      // a wake-up is out for the current non-empty run
  bool fd_armed_ = false;       // the fd was made readable and not reset since
  bool fd_handed_out_ = false;  // fd_locked(handed_out) gave it out
  bool lua_waiting_ = false;    // the Lua thread sleeps on cv
  void (*hook_)(void*) = nullptr;
  void* hook_ctx_ = nullptr;
  void (*hook_release_)(void*) = nullptr;
  int efd_ = -1;                // read end
  int efd_w_ = -1;              // write end (the same for an eventfd)
  std::atomic<int> port_{0};
  std::atomic<bool> coalesce_{false};
  std::atomic<int> sock_{-1};
  std::atomic<std::uint64_t> notified_{0}, notifyfailed_{0};  // stats
};

}  // namespace dss

#endif  // DSS_CORE_NOTIFY_HPP
