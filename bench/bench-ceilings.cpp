// bench-ceilings.cpp -- the ceilings: a bare mutex + deque (runner.h's CeilQ),
// producers that write an eventfd only on empty -> non-empty, and a consumer
// that lua_pcalls a Lua function per item: swapping the whole queue out under
// one lock, the same with an args table per item, one item per lock, or the
// 1.0-style poll() path's ceiling (one item per lock, the args table built
// under it, cb(unpack(args))). Rows C1-C16 (measured with ours, interleaved:
// bench-fire-forget.cpp).
#include <sched.h>

#include <thread>

#include "runner.h"

namespace bench {

namespace {

void pcall_item(lua_State* L, int fref, long x, bool table) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
  if (table) {
    lua_createtable(L, 1, 0);
    lua_pushinteger(L, lua_Integer(x));
    lua_rawseti(L, -2, 1);
  } else {
    lua_pushinteger(L, lua_Integer(x));
  }
  lua_pcall(L, 1, 0, 0);
}

// One item per lock: false when the queue was empty (then waits on it).
// args: the 1.0 style, the args table built under the lock, as poll() did.
bool consume_one(lua_State* L, CeilQ& q, int fref, bool args) {
  long x;
  {
    std::unique_lock<std::mutex> lock(q.mu);
    if (q.q.empty()) {
      lock.unlock();
      q.wait();
      return false;
    }
    x = q.q.front();
    q.q.pop_front();
    if (args) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
      lua_createtable(L, 1, 0);
      lua_pushinteger(L, lua_Integer(x));
      lua_rawseti(L, -2, 1);
    }
  }
  if (args) lua_pcall(L, 1, 0, 0);
  else pcall_item(L, fref, x, false);
  return true;
}

// Consumes `total` items from q on this thread, calling Lua per item.
void ceil_consume(lua_State* L, CeilQ& q, long total, CeilStyle style, int fref) {
  long done = 0;
  std::deque<long> local;
  while (done < total) {
    if (style == CeilStyle::pop1 || style == CeilStyle::pop1_args) {
      if (consume_one(L, q, fref, style == CeilStyle::pop1_args)) ++done;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(q.mu);
      local.swap(q.q);
    }
    if (local.empty()) {
      q.wait();
      continue;
    }
    for (long x : local) pcall_item(L, fref, x, style == CeilStyle::table);
    done += long(local.size());
    local.clear();
  }
}

// A state with the counting callback; *fref: the one `style` calls.
lua_State* ceil_state(CeilStyle style, int* fref) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  bool args = style == CeilStyle::table || style == CeilStyle::pop1_args;
  *fref = ref_global(L, args ? "cbt" : "cb");
  return L;
}

}  // namespace

const std::vector<CeilStyle>& ceil_styles() {
  static const std::vector<CeilStyle> styles = {CeilStyle::swap, CeilStyle::table,
                                                CeilStyle::pop1, CeilStyle::pop1_args};
  return styles;
}

const char* style_name(CeilStyle s) {
  switch (s) {
    case CeilStyle::swap: return "ceiling: swap drain, pcall per item";
    case CeilStyle::table: return "ceiling + args table per item";
    case CeilStyle::pop1: return "ceiling, one item per lock";
    case CeilStyle::pop1_args:
      return "ceiling 1.0-style: one item per lock, args table built under it, cb(unpack(args))";
  }
  return "";
}

double ceil_throughput(int producers, long total, CeilStyle style, double* writes_per_item) {
  int fref;
  lua_State* L = ceil_state(style, &fref);
  CeilQ q;
  std::atomic<int> go{0};
  std::vector<std::thread> ths;
  long per = total / producers;
  total = per * producers;
  for (int p = 0; p < producers; ++p)
    ths.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire)) sched_yield();
      for (long i = 0; i < per; ++i) q.push(p * per + i);
    });
  auto t0 = Clock::now();
  go.store(1, std::memory_order_release);
  ceil_consume(L, q, total, style, fref);
  double s = secs_since(t0);
  for (auto& t : ths) t.join();
  if (call(L, "count", {}) != double(total)) std::abort();
  if (writes_per_item) *writes_per_item = double(q.writes.load()) / double(total);
  lua_close(L);
  return double(total) / s;
}

double ceil_drain_at_depth(long depth, double* fill_rate, CeilStyle style) {
  int fref;
  lua_State* L = ceil_state(style, &fref);
  CeilQ q;
  std::thread prod([&] {
    auto t = Clock::now();
    for (long i = 0; i < depth; ++i) q.push(i);
    if (fill_rate) *fill_rate = double(depth) / secs_since(t);
  });
  prod.join();
  auto t0 = Clock::now();
  ceil_consume(L, q, depth, style, fref);
  double s = secs_since(t0);
  lua_close(L);
  return double(depth) / s;
}

void ceiling_rows(const Results& res) {
  int k = 1;
  for (CeilStyle s : ceil_styles())
    for (int p : PRODUCERS) {
      double v = res.at(int(s), p);
      row("C" + std::to_string(k++), std::string(style_name(s)) + ", " + std::to_string(p) + "P",
          fmt_rate(v), fmt_ratio(v, res.ceil_at(p)), "");
    }
}

}  // namespace bench
