// lua_thread.hpp -- what the hub knows of the Lua thread, its one consumer:
// which thread it is and whether it is draining now (so that a delivery
// from it that would wait forever fails with WOULD_DEADLOCK instead), and
// the registrations whose callbacks it is running, one per nesting level
// (so that unreg can wait until none of its own runs any more).
#ifndef DSS_CORE_LUA_THREAD_HPP
#define DSS_CORE_LUA_THREAD_HPP

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace dss {

struct Blocking;

class LuaThread {
 public:
  // mu: the hub's lock (quiesce sleeps under it).
  explicit LuaThread(std::mutex& mu) : mu_(mu) {}
  LuaThread(const LuaThread&) = delete;
  LuaThread& operator=(const LuaThread&) = delete;

  // Back to a new hub's state (no item in flight, no unreg waiting).
  void reset();

  // --- the drain marks ------------------------------------------------------
  // The thread taking items marks itself for as long as it does (nests).
  void drain_enter();
  void drain_leave();
  // Marks the calling thread as the Lua thread (drain_enter does too).
  void here();
  // A wait (timed or not) from the calling thread would never end.
  bool would_deadlock(bool timed) const;

  // --- in-flight levels ---------------------------------------------------------
  // The Lua thread claims the next level before it claims an item, sets
  // the item's registration id on it just before the claim, and lets it go
  // when the item ended. Levels nest as its C frames do: a decoder's
  // allocation can run a waiting-thread callback's finalizer, which runs
  // another return callback inside it. Levels deeper than kLevels count in
  // over_, and unreg waits for those whatever their id.
  int push();
  void set(int level, std::uint64_t id) {
    if (level < kLevels) inflight_[level].store(id, std::memory_order_relaxed);
  }
  void pop(int level);
  // Waits until no callback of id runs on the Lua thread (unless called
  // from inside one of them: nothing to wait for but ourselves), nor,
  // elsewhere, busy(ctx, id) says one does (checked under the lock).
  using Busy = bool (*)(const void* ctx, std::uint64_t id);
  void quiesce(std::uint64_t id, Busy busy, const void* ctx);
  // Under the lock: wakes quiesce() to look again.
  void changed_locked() {
    if (quiet_waiters_.load(std::memory_order_relaxed)) quiet_cv_.notify_all();
  }

  // --- blocking items claimed, not yet marked taken (Hub::untaken_push) ------
  // The Lua thread's own: innermost last.
  static constexpr int kUntaken = 8;
  Blocking* untaken[kUntaken] = {};
  int n_untaken = 0;

 private:
  bool has(std::uint64_t id) const;

  static constexpr int kLevels = 7;
  std::mutex& mu_;
  alignas(64) std::atomic<std::uint64_t> inflight_[kLevels] = {};
  std::atomic<int> over_{0};
  int depth_ = 0;  // Lua thread
  std::atomic<std::uintptr_t> inflight_thread_{0};
  std::atomic<std::uintptr_t> drainer_{0};
  // The thread that last entered a drain: the Lua thread, as far as the
  // hub can tell (see would_deadlock).
  std::atomic<std::uintptr_t> lua_thread_{0};
  int drain_depth_ = 0;
  // --- unreg calls in quiesce() ----------------------------------------------
  alignas(64) std::atomic<int> quiet_waiters_{0};
  std::condition_variable quiet_cv_;
};

}  // namespace dss

#endif  // DSS_CORE_LUA_THREAD_HPP
