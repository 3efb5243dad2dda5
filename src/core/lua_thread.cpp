// lua_thread.cpp -- see lua_thread.hpp.
#include "lua_thread.hpp"

#include "clock.hpp"

namespace dss {

void LuaThread::reset() {
  for (auto& l : inflight_) l.store(0, std::memory_order_relaxed);
  over_.store(0, std::memory_order_relaxed);
  depth_ = drain_depth_ = 0;
  n_untaken = 0;
  inflight_thread_.store(0, std::memory_order_relaxed);
  drainer_.store(0, std::memory_order_relaxed);
  lua_thread_.store(0, std::memory_order_relaxed);
}

void LuaThread::here() { lua_thread_.store(my_tag(), std::memory_order_relaxed); }

// A wait with no limit would never end on the Lua thread: draining now, or
// between two drains (while it waits here, nothing drains).
bool LuaThread::would_deadlock(bool timed) const {
  std::uintptr_t me = my_tag();
  if (drainer_.load(std::memory_order_relaxed) == me) return true;
  return !timed && lua_thread_.load(std::memory_order_relaxed) == me;
}

void LuaThread::drain_enter() {
  if (drain_depth_++ == 0) {
    std::uintptr_t me = my_tag();
    drainer_.store(me, std::memory_order_relaxed);
    if (lua_thread_.load(std::memory_order_relaxed) != me)
      lua_thread_.store(me, std::memory_order_relaxed);
  }
}

void LuaThread::drain_leave() {
  if (--drain_depth_ == 0) drainer_.store(0, std::memory_order_relaxed);
}

// An item taken or claimed at level k ends (settle, finish,
// finish_returned) before the one at level k - 1 does, on every path,
// errors included (the binding runs every client callback under a pcall
// and ends the item after it).
int LuaThread::push() {
  std::uintptr_t me = my_tag();
  if (inflight_thread_.load(std::memory_order_relaxed) != me)
    inflight_thread_.store(me, std::memory_order_relaxed);
  int level = depth_++;
  if (level >= kLevels) over_.fetch_add(1, std::memory_order_relaxed);
  return level;
}

void LuaThread::pop(int level) {
  depth_ = level;
  if (level >= kLevels) over_.fetch_sub(1, std::memory_order_release);
  else if (inflight_[level].load(std::memory_order_relaxed) != 0)
    inflight_[level].store(0, std::memory_order_release);
  else return;
  // An unreg waiting for us; if this read misses one that just arrived, it
  // finds the level clear within its bounded wait (see quiesce).
  if (quiet_waiters_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mu_);
    quiet_cv_.notify_all();
  }
}

bool LuaThread::has(std::uint64_t id) const {
  if (over_.load(std::memory_order_acquire)) return true;
  for (const auto& l : inflight_)
    if (l.load(std::memory_order_acquire) == id) return true;
  return false;
}

void LuaThread::quiesce(std::uint64_t id, Busy busy, const void* ctx) {
  std::unique_lock<std::mutex> lock(mu_);
  quiet_waiters_.fetch_add(1, std::memory_order_relaxed);
  while ((has(id) && inflight_thread_.load(std::memory_order_relaxed) != my_tag()) ||
         busy(ctx, id))
    quiet_cv_.wait_for(lock, std::chrono::milliseconds(1));
  quiet_waiters_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace dss
