// bench.cpp -- darksidesync against a bare queue->Lua ceiling, same process.
//
// Embeds one Lua (the one this binary is linked against), and:
//  * builds the ceilings itself: a mutex + std::deque, producers that write
//    an eventfd only on empty -> non-empty, a consumer that swaps the whole
//    queue out under one lock and lua_pcalls a Lua function per item (and
//    the variants: a table built per item; one item popped per lock);
//  * loads darksidesync with `require` (package.cpath -> the built module)
//    and delivers through the registry ABI from producer threads, exactly as
//    a client library would: only include/darksidesync_api.h, never src/;
//  * prints one markdown table: every row's absolute figure and its ratio to
//    the matching ceiling (and to luv, whose figures the driver measured in
//    the same invocation and hands in with --luv FILE).
//
// Figures are medians of --reps repetitions. See docs/performance.md.
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "darksidesync_api.h"

#ifndef DSS_BENCH_MODULE_DIR
#define DSS_BENCH_MODULE_DIR "."
#endif
#ifndef DSS_BENCH_LUA_DIR
#define DSS_BENCH_LUA_DIR "."
#endif

namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// --- options -----------------------------------------------------------------

struct Options {
  std::string module_dir = DSS_BENCH_MODULE_DIR;
  std::string lua_dir = DSS_BENCH_LUA_DIR;  // lua/ (the dss helper)
  std::string out_dir;                       // .dat files for the plots
  std::string luv_file;                      // key value lines from luv.lua
  std::string label;                         // Lua version label
  int reps = 5;
  double scale = 1.0;  // multiplies item counts
  bool quick = false;  // only the per-version summary rows
  int poll_probe = 0;  // --poll P
  bool loops = false;  // --loops: only the event-loop latency rows
};
Options opt;

long scaled(long n) { return std::max(1000L, long(double(n) * opt.scale)); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// --- Lua helpers ---------------------------------------------------------------

int l_yield(lua_State*) {
  sched_yield();
  return 0;
}

std::atomic<bool> g_stop{false};
int l_stopped(lua_State* L) {
  lua_pushboolean(L, g_stop.load(std::memory_order_acquire));
  return 1;
}

// bench_pollfd(fd [, timeout_ms]): poll(2) on one fd for POLLIN, as an event
// loop (luv's uv_poll, cqueues) would; true when readable. Counts its calls.
long g_polls = 0;
int l_pollfd(lua_State* L) {
  struct pollfd p{};
  p.fd = static_cast<int>(luaL_checkinteger(L, 1));
  p.events = POLLIN;
  int ms = static_cast<int>(luaL_optinteger(L, 2, -1));
  ++g_polls;
  int r = ::poll(&p, 1, ms);
  lua_pushboolean(L, r > 0 && (p.revents & POLLIN));
  return 1;
}

// bench_now(): the steady clock in nanoseconds (a Lua number).
double now_ns() {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count());
}
int l_now(lua_State* L) {
  lua_pushnumber(L, now_ns());
  return 1;
}

lua_State* new_state() {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushcfunction(L, l_now);
  lua_setglobal(L, "bench_now");
  lua_pushcfunction(L, l_yield);
  lua_setglobal(L, "bench_yield");
  lua_pushcfunction(L, l_stopped);
  lua_setglobal(L, "bench_stopped");
  lua_pushcfunction(L, l_pollfd);
  lua_setglobal(L, "bench_pollfd");
  // Ours first, then the default paths (LuaSocket for the dss helper).
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "cpath");
  std::string cpath = opt.module_dir + "/?.so;" + lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_pushstring(L, cpath.c_str());
  lua_setfield(L, -2, "cpath");
  lua_getfield(L, -1, "path");
  std::string path = opt.lua_dir + "/?.lua;" + lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_pushstring(L, path.c_str());
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  return L;
}

void run(lua_State* L, const char* code) {
  if (luaL_loadstring(L, code) || lua_pcall(L, 0, 0, 0)) {
    std::fprintf(stderr, "bench: Lua error: %s\n", lua_tostring(L, -1));
    std::exit(2);
  }
}

// Calls global function `name` with integer arguments; returns its first
// result as a number.
double call(lua_State* L, const char* name, std::initializer_list<double> args) {
  lua_getglobal(L, name);
  for (double a : args) lua_pushnumber(L, a);
  if (lua_pcall(L, int(args.size()), 1, 0)) {
    std::fprintf(stderr, "bench: Lua error in %s: %s\n", name, lua_tostring(L, -1));
    std::exit(2);
  }
  double r = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return r;
}

int ref_global(lua_State* L, const char* name) {
  lua_getglobal(L, name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

// The Lua side shared by all runs: a callback that counts, and the same
// callback behind an args table.
const char* const COMMON_LUA = R"(
  unpack = unpack or table.unpack
  n = 0
  function cb(x) n = n + 1 end
  function cbt(t) cb(unpack(t)) end
  function count() return n end
)";

// --- the ceiling: mutex + deque, swap drain, coalesced eventfd -------------------

struct CeilQ {
  std::mutex mu;
  std::deque<long> q;
  int efd = eventfd(0, EFD_CLOEXEC);
  std::atomic<long> writes{0};  // eventfd writes (wake-ups)
  ~CeilQ() { close(efd); }
  void push(long x) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu);
      was_empty = q.empty();
      q.push_back(x);
    }
    if (was_empty) {
      writes.fetch_add(1, std::memory_order_relaxed);
      std::uint64_t one = 1;
      if (write(efd, &one, 8) != 8) std::abort();
    }
  }
  void wait() {
    std::uint64_t v;
    if (read(efd, &v, 8) != 8) std::abort();
  }
};

enum class CeilStyle { swap, table, pop1 };
const char* style_name(CeilStyle s) {
  switch (s) {
    case CeilStyle::swap: return "ceiling: swap drain, pcall per item";
    case CeilStyle::table: return "ceiling + args table per item";
    case CeilStyle::pop1: return "ceiling, one item per lock";
  }
  return "";
}

// Consumes `total` items from q on this thread, calling Lua per item.
void ceil_consume(lua_State* L, CeilQ& q, long total, CeilStyle style, int fref) {
  long done = 0;
  std::deque<long> local;
  while (done < total) {
    if (style == CeilStyle::pop1) {
      long x;
      {
        std::unique_lock<std::mutex> lock(q.mu);
        if (q.q.empty()) {
          lock.unlock();
          q.wait();
          continue;
        }
        x = q.q.front();
        q.q.pop_front();
      }
      lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
      lua_pushinteger(L, lua_Integer(x));
      lua_pcall(L, 1, 0, 0);
      ++done;
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
    for (long x : local) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
      if (style == CeilStyle::table) {
        lua_createtable(L, 1, 0);
        lua_pushinteger(L, lua_Integer(x));
        lua_rawseti(L, -2, 1);
      } else {
        lua_pushinteger(L, lua_Integer(x));
      }
      lua_pcall(L, 1, 0, 0);
    }
    done += long(local.size());
    local.clear();
  }
}

// Items/s with P producers running concurrently with the consumer;
// *writes_per_item: eventfd writes (wake-ups) per item.
double ceil_throughput(int producers, long total, CeilStyle style,
                       double* writes_per_item = nullptr) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  int fref = ref_global(L, style == CeilStyle::table ? "cbt" : "cb");
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

// Drain rate of a queue prefilled with `depth` items (swap style).
double ceil_drain_at_depth(long depth, double* fill_rate,
                           CeilStyle style = CeilStyle::swap) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  int fref = ref_global(L, style == CeilStyle::table ? "cbt" : "cb");
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

// Ceiling round trip: the producer pushes a request and waits on a condition
// variable; the consumer (spinning, or sleeping on the eventfd) pcalls a Lua
// function with it and hands the result back.
struct RtReq {
  long x;
  long answer = 0;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
};

struct RtStats {
  double rate = 0, p50 = 0, p99 = 0, p999 = 0;  // round trips/s, µs
};

RtStats percentiles(std::vector<double>& lat, double seconds) {
  std::sort(lat.begin(), lat.end());
  auto at = [&](double p) { return lat[size_t(p * double(lat.size() - 1))]; };
  RtStats r;
  r.rate = double(lat.size()) / seconds;
  r.p50 = at(0.50);
  r.p99 = at(0.99);
  r.p999 = at(0.999);
  return r;
}

RtStats ceil_roundtrip(long count, bool sleeping) {
  lua_State* L = new_state();
  run(L, "function rt(x) return x + 1 end");
  int fref = ref_global(L, "rt");
  std::mutex mu;
  std::deque<RtReq*> q;
  int efd = eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> stop{false};
  std::vector<double> lat;
  lat.reserve(size_t(count));
  double seconds = 0;
  std::thread prod([&] {
    auto t0 = Clock::now();
    for (long i = 0; i < count; ++i) {
      RtReq r;
      r.x = i;
      auto a = Clock::now();
      bool was_empty;
      {
        std::lock_guard<std::mutex> lock(mu);
        was_empty = q.empty();
        q.push_back(&r);
      }
      if (sleeping && was_empty) {
        std::uint64_t one = 1;
        if (write(efd, &one, 8) != 8) std::abort();
      }
      {
        std::unique_lock<std::mutex> lock(r.mu);
        r.cv.wait(lock, [&] { return r.done; });
      }
      lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      if (r.answer != i + 1) std::abort();
    }
    seconds = secs_since(t0);
    stop.store(true);
    std::uint64_t one = 1;
    if (write(efd, &one, 8) != 8) std::abort();
  });
  std::deque<RtReq*> local;
  while (!stop.load(std::memory_order_relaxed)) {
    {
      std::lock_guard<std::mutex> lock(mu);
      local.swap(q);
    }
    if (local.empty()) {
      if (sleeping) {
        std::uint64_t v;
        if (read(efd, &v, 8) != 8) std::abort();
      } else {
        sched_yield();
      }
      continue;
    }
    for (RtReq* r : local) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
      lua_pushinteger(L, lua_Integer(r->x));
      lua_pcall(L, 1, 1, 0);
      long ans = long(lua_tointeger(L, -1));
      lua_pop(L, 1);
      std::lock_guard<std::mutex> lock(r->mu);
      r->answer = ans;
      r->done = true;
      r->cv.notify_one();
    }
    local.clear();
  }
  prod.join();
  close(efd);
  lua_close(L);
  return percentiles(lat, seconds);
}

// --- ours: a client library of darksidesync, inside the bench ---------------------

const DSS_api_1v0_t* g_api = nullptr;
const DSS_api_2v0_t* g_api2 = nullptr;
char g_libid;
int g_cbref = LUA_NOREF;  // the Lua callback the decoders push
int g_rtref = LUA_NOREF;

void client_cancel(void* utilid) { g_api->unreg(utilid); }

// Fire and forget: pData carries the integer itself (no client allocation).
int decode_ff(lua_State* L, void* data, void*) {
  if (!L) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g_cbref);
  lua_pushinteger(L, lua_Integer(reinterpret_cast<std::intptr_t>(data)));
  return 2;
}

struct RtItem {
  long x;
  long answer;
};

int decode_rt(lua_State* L, void* data, void*) {
  if (!L) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g_rtref);
  lua_pushinteger(L, lua_Integer(static_cast<RtItem*>(data)->x));
  return 2;
}

int ret_rt(lua_State* L, void* data, void*, int garbage) {
  RtItem* it = static_cast<RtItem*>(data);
  it->answer = (L && !garbage) ? long(lua_tointeger(L, 1)) : -1;
  return 0;
}

// The Lua side of ours: the consumer loops, one per way of taking items.
const char* const OURS_LUA = R"(
  darksidesync = require "darksidesync"
  local dss_ = darksidesync
  local poll, dispatch, queuesize = dss_.poll, dss_.dispatch, dss_.queuesize
  local yield, stopped, pollfd = bench_yield, bench_stopped, bench_pollfd
  -- busy loops: take items; when there were none, yield the CPU
  function drain(target)  -- poll() + the callback with the args table
    while n < target do
      local r, f, a = poll()
      if f then f(unpack(a)) elseif r == -1 then yield() end
    end
    return n
  end
  function drain_dispatch(target)  -- dispatch(): callbacks called directly
    while n < target do
      if dispatch() == 0 then yield() end
    end
    return n
  end
  -- sleeping loop: poll(2) on getfd(), then dispatch()
  function drain_fd(target)
    local fd = dss_.getfd()
    while n < target do
      if pollfd(fd, 1000) then dispatch() end
    end
    return n
  end
  function rt(wt, x) wt(x + 1) end
  -- round-trip servers, until the producer is done (it then delivers one
  -- more item, so that a sleeping loop wakes up to see it)
  function serve_busy()
    while not stopped() do
      local r, f, a = poll()
      if f then f(unpack(a)) elseif r == -1 then yield() end
    end
  end
  function serve_fd()
    local fd = dss_.getfd()
    while not stopped() do
      if pollfd(fd, 1000) then dispatch() end
    end
  end
  function serve_wait()
    local wait = dss_.wait
    while not stopped() do
      if wait(1) > 0 then dispatch() end
    end
  end
  -- socket.select on the dss helper's socket (UDP, one datagram per item)
  function serve_sleeping()
    local socket = require "socket"
    local dss = require "dss"
    local skt = assert(dss.getsocket())
    local handler = dss.gethandler()
    while not stopped() do
      local r = socket.select({skt}, nil, 1)
      if r[1] then handler(skt) end
    end
  end
  -- UDP coalesced mode: a datagram only when the queue goes from empty to
  -- non-empty; on each datagram the reader drains with dispatch() until
  -- queuesize() is 0.
  -- with_dss == 1: the dss helper's getsocket("coalesce") and its handler;
  -- else a plain LuaSocket socket and loop.
  function setup_coalesce(with_dss)
    if with_dss == 1 then
      local dss = require "dss"
      coalesce_skt = assert(dss.getsocket("coalesce"))
      coalesce_handler = dss.gethandler("dispatch")
      return
    end
    local socket = require "socket"
    local skt = assert(socket.udp())
    assert(skt:setsockname("127.0.0.1", 0))
    local _, port = skt:getsockname()
    dss_.setport(tonumber(port), "coalesce")
    coalesce_skt = skt
    coalesce_handler = function(s)
      s:receive(8192)
      repeat dispatch() until queuesize() == 0
    end
  end
  -- UDP, drained by a socket.select loop until every item ran or the
  -- socket stayed quiet for `quiet` seconds once the producer was done:
  -- returns items run; sets datagrams read, items left queued, seconds to
  -- the last item
  function drain_udp(target, quiet, coalesced)
    local socket = require "socket"
    local skt, handler
    if coalesced == 1 then
      skt, handler = coalesce_skt, coalesce_handler
    else
      local dss = require "dss"
      skt, handler = assert(dss.getsocket()), dss.gethandler()
    end
    local reads, t0, tlast = 0, socket.gettime(), socket.gettime()
    while n < target do
      local r = socket.select({skt}, nil, quiet)
      if not r[1] then
        if stopped() then break end
      else
        handler(skt); reads = reads + 1
        tlast = socket.gettime()
      end
    end
    last_reads, last_left, last_secs = reads, queuesize(), tlast - t0
    return n
  end
  function stat(name) return dss_.stats()[name] end
)";

// A Lua state with darksidesync required and the bench registered as a
// client library; returns the utilid.
void* ours_state(lua_State** out) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  run(L, OURS_LUA);
  g_cbref = ref_global(L, "cb");
  g_rtref = ref_global(L, "rt");
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  lua_getfield(L, -1, DSS_API_1v0_KEY);
  g_api = static_cast<const DSS_api_1v0_t*>(lua_touserdata(L, -1));
  lua_getfield(L, -2, DSS_API_2v0_KEY);
  g_api2 = static_cast<const DSS_api_2v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 3);
  if (!g_api) {
    std::fprintf(stderr, "bench: no DSS API 1v0 in the registry\n");
    std::exit(2);
  }
  if (!g_api2) {
    std::fprintf(stderr, "bench: no DSS API 2v0 in the registry\n");
    std::exit(2);
  }
  int err = 0;
  void* utilid = g_api->reg(L, &g_libid, client_cancel, &err);
  if (!utilid || err != DSS_SUCCESS) {
    std::fprintf(stderr, "bench: reg failed: %d\n", err);
    std::exit(2);
  }
  *out = L;
  return utilid;
}

double stat(lua_State* L, const char* name) {
  lua_getglobal(L, "stat");
  lua_pushstring(L, name);
  if (lua_pcall(L, 1, 1, 0)) {
    std::fprintf(stderr, "bench: Lua error in stats(): %s\n", lua_tostring(L, -1));
    std::exit(2);
  }
  double r = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return r;
}

// v2: through the 2v0 deliver2 (no flags, no timeout) instead of 1v0 deliver.
void deliver_ff(void* utilid, long x, bool v2 = false) {
  void* data = reinterpret_cast<void*>(std::intptr_t(x));
  int rc = v2 ? g_api2->deliver2(utilid, decode_ff, nullptr, data, 0, DSS_TIMEOUT_INFINITE)
              : g_api->deliver(utilid, decode_ff, nullptr, data);
  if (rc < DSS_SUCCESS) {
    std::fprintf(stderr, "bench: deliver failed: %d\n", rc);
    std::abort();
  }
}

// How Lua takes the items.
enum class Drain {
  poll,      // busy: poll() + f(unpack(args)), sched_yield when empty
  dispatch,  // busy: dispatch(), sched_yield when it ran nothing
  fd,        // sleeping: poll(2) on getfd(), then dispatch()
};

const char* drain_fn(Drain d) {
  switch (d) {
    case Drain::poll: return "drain";
    case Drain::dispatch: return "drain_dispatch";
    case Drain::fd: return "drain_fd";
  }
  return "";
}

struct FfRun {
  int producers = 1;
  Drain drain = Drain::poll;
  bool v2 = false;    // deliver2 instead of deliver
  long maxqueue = 0;  // setmaxqueue (0: unbounded)
};

struct FfStats {
  double rate = 0;       // items/s
  double notices = 0;    // wake-ups sent per item: stats().notified / delivered
  double polls = 0;      // poll(2) calls per item (Drain::fd)
  double maxqueued = 0;  // stats().maxqueued
};

FfStats ours_ff(const FfRun& r, long total) {
  lua_State* L;
  void* utilid = ours_state(&L);
  if (r.maxqueue > 0)
    run(L, ("darksidesync.setmaxqueue(" + std::to_string(r.maxqueue) + ")").c_str());
  if (r.drain == Drain::fd) run(L, "darksidesync.getfd()");
  g_polls = 0;
  std::atomic<int> go{0};
  std::vector<std::thread> ths;
  long per = total / r.producers;
  total = per * r.producers;
  for (int p = 0; p < r.producers; ++p)
    ths.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire)) sched_yield();
      for (long i = 0; i < per; ++i) deliver_ff(utilid, p * per + i, r.v2);
    });
  auto t0 = Clock::now();
  go.store(1, std::memory_order_release);
  call(L, drain_fn(r.drain), {double(total)});
  double s = secs_since(t0);
  for (auto& t : ths) t.join();
  FfStats st;
  st.rate = double(total) / s;
  st.notices = stat(L, "notified") / stat(L, "delivered");
  st.polls = double(g_polls) / double(total);
  st.maxqueued = stat(L, "maxqueued");
  lua_close(L);
  return st;
}

double ours_throughput(int producers, long total, Drain d = Drain::poll) {
  FfRun r;
  r.producers = producers;
  r.drain = d;
  return ours_ff(r, total).rate;
}

double ours_drain_at_depth(long depth, double* fill_rate, Drain d, bool v2 = false) {
  lua_State* L;
  void* utilid = ours_state(&L);
  std::thread prod([&] {
    auto t = Clock::now();
    for (long i = 0; i < depth; ++i) deliver_ff(utilid, i, v2);
    if (fill_rate) *fill_rate = double(depth) / secs_since(t);
  });
  prod.join();
  auto t0 = Clock::now();
  call(L, drain_fn(d), {double(depth)});
  double s = secs_since(t0);
  lua_close(L);
  return double(depth) / s;
}

// How a round trip's Lua side waits for the request.
enum class Wake {
  busy,  // poll() in a busy loop
  udp,   // socket.select on the dss helper's socket, one datagram per item
  fd,    // poll(2) on getfd(), then dispatch()
  wait,  // wait(), then dispatch()
};

RtStats ours_roundtrip(long count, Wake w) {
  lua_State* L;
  void* utilid = ours_state(&L);
  g_stop.store(false);
  std::vector<double> lat;
  lat.reserve(size_t(count));
  double seconds = 0;
  std::atomic<bool> ready{false};
  std::thread prod([&] {
    while (!ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    auto t0 = Clock::now();
    for (long i = 0; i < count; ++i) {
      RtItem it{i, 0};
      auto a = Clock::now();
      int rc = g_api->deliver(utilid, decode_rt, ret_rt, &it);
      lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      if (rc < DSS_SUCCESS || it.answer != i + 1) {
        std::fprintf(stderr, "bench: round trip failed: rc %d answer %ld\n", rc, it.answer);
        std::abort();
      }
    }
    seconds = secs_since(t0);
    g_stop.store(true);
    deliver_ff(utilid, 0);  // wakes a sleeping loop up to see the stop
  });
  // Set up what the loop sleeps on before the first request: the helper's
  // socket (it calls setport) or the fd.
  if (w == Wake::udp) run(L, "require('dss').getsocket()");
  if (w == Wake::fd) run(L, "darksidesync.getfd()");
  ready.store(true);
  switch (w) {
    case Wake::busy: call(L, "serve_busy", {}); break;
    case Wake::udp: call(L, "serve_sleeping", {}); break;
    case Wake::fd: call(L, "serve_fd", {}); break;
    case Wake::wait: call(L, "serve_wait", {}); break;
  }
  prod.join();
  lua_close(L);
  return percentiles(lat, seconds);
}

// The bare sendto ceiling of per-item mode: one thread sends `total`
// datagrams " <i>" (as the notice) to a socket bound on 127.0.0.1 that a
// second thread reads until it stays quiet. Returns datagrams sent per
// second, timed on the sender.
double bare_sendto_rate(long total) {
  int rfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int sfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (rfd < 0 || sfd < 0) std::abort();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(rfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(rfd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    std::abort();
  std::atomic<bool> done{false};
  std::thread reader([&] {
    char buf[64];
    for (;;) {
      pollfd p{rfd, POLLIN, 0};
      int r = ::poll(&p, 1, 100);
      if (r > 0) {
        while (recv(rfd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        }
      } else if (done.load()) {
        break;
      }
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < total; ++i) {
    char buf[32];
    int n = std::snprintf(buf, sizeof buf, " %ld", i % 64 + 1);
    if (sendto(sfd, buf, std::size_t(n), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&a),
               sizeof a) != n)
      std::abort();
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  done.store(true);
  reader.join();
  close(rfd);
  close(sfd);
  return secs > 0 ? double(total) / secs : 0;
}

struct UdpStats {
  double send_rate = 0;  // deliveries/s, timed on the producer
  double rate = 0;       // items/s, select loop
  double sent = 0;       // datagrams sent
  double failed = 0;     // send failures
  double reads = 0;      // datagrams the loop read
  double run = 0;        // items the loop ran
  double stranded = 0;   // items still queued when the socket went quiet
  double dropped = 0;    // kernel RcvbufErrors delta during the run
};

// The kernel's count of UDP datagrams dropped on a full receive buffer
// (system-wide: other processes may add to it).
double udp_rcvbuf_errors() {
  FILE* f = std::fopen("/proc/net/snmp", "r");
  if (!f) return -1;
  char names[1024], values[1024];
  double r = -1;
  while (std::fgets(names, sizeof names, f) && std::fgets(values, sizeof values, f)) {
    if (std::strncmp(names, "Udp:", 4) != 0) continue;
    std::vector<std::string> n, v;
    for (char* t = std::strtok(names, " \n"); t; t = std::strtok(nullptr, " \n")) n.push_back(t);
    for (char* t = std::strtok(values, " \n"); t; t = std::strtok(nullptr, " \n")) v.push_back(t);
    for (size_t i = 0; i < n.size() && i < v.size(); ++i)
      if (n[i] == "RcvbufErrors") r = std::atof(v[i].c_str());
    break;
  }
  std::fclose(f);
  return r;
}

// Whether the dss helper has the coalesced mode: getsocket("coalesce")
// makes two deliveries to an empty queue send one datagram, not two.
bool dss_has_coalesce() {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, "assert(require('dss').getsocket('coalesce'))");
  deliver_ff(utilid, 1);
  deliver_ff(utilid, 2);
  bool yes = stat(L, "notified") == 1;
  lua_close(L);
  return yes;
}
bool g_dss_coalesce = false;

// One producer delivers `total` items while Lua runs a socket.select loop.
// coalesced: setport(port, "coalesce") and a reader that drains with
// dispatch() until the queue is empty; else the dss helper, per-item mode.
// pace_us > 0: the producer sleeps that long between deliveries.
UdpStats ours_udp(long total, bool coalesced, int pace_us = 0) {
  lua_State* L;
  void* utilid = ours_state(&L);
  if (coalesced) call(L, "setup_coalesce", {g_dss_coalesce ? 1.0 : 0.0});
  else run(L, "require('dss').getsocket()");
  g_stop.store(false);
  std::atomic<long> failed{0};
  double drops0 = udp_rcvbuf_errors();
  double prod_secs = 0;
  std::thread prod([&] {
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < total; ++i) {
      if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
      int rc = g_api->deliver(utilid, decode_ff, nullptr,
                              reinterpret_cast<void*>(std::intptr_t(i)));
      if (rc == DSS_ERR_UDP_SEND_FAILED) ++failed;
      else if (rc != DSS_SUCCESS) std::abort();
    }
    prod_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g_stop.store(true);
  });
  double quiet = opt.scale < 1 ? 0.1 : 0.3;
  call(L, "drain_udp", {double(total), quiet, coalesced ? 1.0 : 0.0});
  prod.join();
  UdpStats u;
  u.run = call(L, "count", {});
  lua_getglobal(L, "last_reads");
  u.reads = lua_tonumber(L, -1);
  lua_getglobal(L, "last_left");
  u.stranded = lua_tonumber(L, -1);
  lua_getglobal(L, "last_secs");
  double secs = lua_tonumber(L, -1);
  lua_pop(L, 3);
  u.rate = secs > 0 ? u.run / secs : 0;
  u.send_rate = prod_secs > 0 ? double(total) / prod_secs : 0;
  u.sent = stat(L, "notified");
  u.failed = double(failed.load());
  u.dropped = udp_rcvbuf_errors() - drops0;
  lua_close(L);
  return u;
}

// --- event-loop latency (the helpers of lua/darksidesync/) -------------------------

// The Lua side: a callback recording deliver -> callback latency (µs), and
// one loop per helper, each until `target` items ran. A loop whose library
// is not installed returns false at once.
const char* const LOOPS_LUA = R"(
  local now = bench_now
  local lat, nlat, target, done = {}, 0, 0, function() end
  function lat_cb(t0)
    nlat = nlat + 1
    lat[nlat] = (now() - t0) / 1000
    if nlat == target then done() end
  end
  function lat_get(i) return lat[i] end
  function lat_count() return nlat end
  local function reset(n, stop) lat, nlat, target, done = {}, 0, n, stop end
  local function has(m) return (pcall(require, m)) end
  loops = {}
  function loops.luv(n)
    if not has "luv" then return false end
    local uv = require "luv"
    local w = require("darksidesync.luv").start()
    reset(n, function() w:close() end)
    uv.run()
    return true
  end
  function loops.cqueues(n)
    if not has "cqueues" then return false end
    local cq = require("cqueues").new()
    local r = require("darksidesync.cqueues").attach(cq)
    reset(n, function() r:stop() end)
    assert(cq:loop())
    return true
  end
  function loops.copas(n)
    if not has "copas" then return false end
    local copas = require "copas"
    local r = require("darksidesync.copas").addreader()
    local finished = false
    reset(n, function() finished = true end)
    while not finished do copas.step(1) end
    r:stop()
    copas.step(0)
    return true
  end
  function loops.select(n)
    local socket = require "socket"
    local r = require("darksidesync.select").new()
    local finished = false
    reset(n, function() finished = true end)
    local set = { r }
    while not finished do
      local rd = socket.select(set, nil, 1)
      if rd[r] then r:dispatch() end
    end
    return true
  end
  function loops.wait(n)
    local finished = false
    reset(n, function() finished = true end)
    while not finished do
      if darksidesync.wait(1) > 0 then darksidesync.dispatch(1000) end
    end
    return true
  end
  function loops.ceiling(n)  -- the C consumer calls lat_cb itself
    reset(n, function() end)
    return true
  end
)";

int g_latref = LUA_NOREF;

int decode_lat(lua_State* L, void* data, void*) {
  if (!L) return 0;  // cancelled (the state closed with items queued)
  lua_rawgeti(L, LUA_REGISTRYINDEX, g_latref);
  lua_pushnumber(L, double(reinterpret_cast<std::intptr_t>(data)));
  return 2;
}

// The producer of the latency rows: `n` items, each carrying its deliver
// time, paced `gap_us` apart so that the loop is asleep when each arrives.
template <typename Deliver>
std::thread paced_producer(long n, int gap_us, Deliver deliver) {
  return std::thread([=] {
    for (long i = 0; i < n; ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(gap_us));
      deliver(std::intptr_t(now_ns()));
    }
  });
}

std::vector<double> lat_values(lua_State* L) {
  std::vector<double> v;
  double n = call(L, "lat_count", {});
  for (long i = 1; i <= long(n); ++i) v.push_back(call(L, "lat_get", {double(i)}));
  return v;
}

// One loop's latencies (µs); empty when its library is not installed.
std::vector<double> loop_latency(const char* loop, long n, int gap_us) {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, LOOPS_LUA);
  g_latref = ref_global(L, "lat_cb");
  lua_getglobal(L, "loops");
  lua_getfield(L, -1, loop);
  lua_remove(L, -2);
  lua_pushnumber(L, double(n));
  // Every loop runs inside the call: the producer starts first, paced, so
  // that each item finds the loop asleep.
  std::thread prod = paced_producer(n, gap_us, [utilid](std::intptr_t t) {
    if (g_api->deliver(utilid, decode_lat, nullptr, reinterpret_cast<void*>(t)) != DSS_SUCCESS)
      std::abort();
  });
  if (lua_pcall(L, 1, 1, 0) != 0) {
    std::fprintf(stderr, "bench: loop %s: %s\n", loop, lua_tostring(L, -1));
    std::exit(2);
  }
  bool ran = lua_toboolean(L, -1);
  lua_pop(L, 1);
  prod.join();
  if (!ran) {  // not installed: what was queued is dropped with the state
    lua_close(L);
    return {};
  }
  std::vector<double> v = lat_values(L);
  lua_close(L);
  return v;
}

// The ceiling of the latency rows: the bare queue, the consumer asleep on
// its eventfd, then lua_pcall of the same Lua callback per item.
std::vector<double> ceil_latency(long n, int gap_us) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  run(L, LOOPS_LUA);
  run(L, ("loops.ceiling(" + std::to_string(n) + ")").c_str());
  int ref = ref_global(L, "lat_cb");
  CeilQ q;
  std::thread prod = paced_producer(n, gap_us, [&q](std::intptr_t t) { q.push(long(t)); });
  long done = 0;
  std::deque<long> local;
  while (done < n) {
    {
      std::lock_guard<std::mutex> lock(q.mu);
      local.swap(q.q);
    }
    if (local.empty()) {
      q.wait();
      continue;
    }
    for (long t : local) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
      lua_pushnumber(L, double(t));
      lua_pcall(L, 1, 0, 0);
    }
    done += long(local.size());
    local.clear();
  }
  prod.join();
  std::vector<double> v = lat_values(L);
  lua_close(L);
  return v;
}

// --- memory -------------------------------------------------------------------------

long rss_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

long heap_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return long(mi.uordblks + mi.hblkhd);
}

struct MemStats {
  double rss_per_item, heap_per_item, rss_retained, heap_retained, lua_retained;
  double ceil_heap_per_item;
};

MemStats memory(long items) {
  MemStats m{};
  {
    // Ceiling: the deque of the bare queue.
    malloc_trim(0);
    long h0 = heap_bytes();
    auto* q = new CeilQ;
    for (long i = 0; i < items; ++i) q->push(i);
    m.ceil_heap_per_item = double(heap_bytes() - h0) / double(items);
    delete q;
  }
  lua_State* L;
  void* utilid = ours_state(&L);
  lua_gc(L, LUA_GCCOLLECT, 0);
  malloc_trim(0);
  long r0 = rss_bytes(), h0 = heap_bytes();
  double k0 = lua_gc(L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(L, LUA_GCCOUNTB, 0);
  std::thread prod([&] {
    for (long i = 0; i < items; ++i) deliver_ff(utilid, i);
  });
  prod.join();
  m.rss_per_item = double(rss_bytes() - r0) / double(items);
  m.heap_per_item = double(heap_bytes() - h0) / double(items);
  call(L, "drain", {double(items)});
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  malloc_trim(0);
  m.rss_retained = double(rss_bytes() - r0);
  m.heap_retained = double(heap_bytes() - h0);
  m.lua_retained = lua_gc(L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(L, LUA_GCCOUNTB, 0) - k0;
  lua_close(L);
  return m;
}

// --- output ---------------------------------------------------------------------------

std::map<std::string, double> luv;

// Rows whose figure is a must (no item stranded, the bound held): a
// violation is printed at the end and makes dss_bench exit 3, after the
// whole table.
std::vector<std::string> violations;
void must(bool ok, const std::string& what) {
  if (!ok) violations.push_back(what);
}

std::string fmt_rate(double v) {
  char b[64];
  if (v >= 1e6) std::snprintf(b, sizeof b, "%.2f M/s", v / 1e6);
  else if (v >= 1e3) std::snprintf(b, sizeof b, "%.1f k/s", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f /s", v);
  return b;
}

std::string fmt_ratio(double a, double b) {
  if (!(b > 0) || !(a >= 0)) return "";
  char s[32];
  double r = a / b;
  if (r >= 10) std::snprintf(s, sizeof s, "%.0f×", r);
  else if (r >= 0.1) std::snprintf(s, sizeof s, "%.2f×", r);
  else std::snprintf(s, sizeof s, "%.3f×", r);
  return s;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

void row(const std::string& id, const std::string& what, const std::string& figure,
         const std::string& vs_ceil, const std::string& vs_luv,
         const std::string& notes = "") {
  std::printf("| %s | %s | %s | %s | %s | %s |\n", id.c_str(), what.c_str(),
              figure.c_str(), vs_ceil.c_str(), vs_luv.c_str(), notes.c_str());
  std::fflush(stdout);
}

void header(const char* title) {
  std::printf("\n%s\n\n| # | row | figure | vs ceiling | vs luv | notes |\n"
              "|---|---|---|---|---|---|\n", title);
}

double luv_get(const char* key) {
  auto it = luv.find(key);
  return it == luv.end() ? -1 : it->second;
}

FILE* dat(const char* name) {
  if (opt.out_dir.empty()) return nullptr;
  std::string p = opt.out_dir + "/" + name;
  return std::fopen(p.c_str(), "w");
}

std::string depth_name(long d) {
  if (d >= 1000000) return std::to_string(d / 1000000) + " M";
  return std::to_string(d / 1000) + " k";
}

// A fraction as a percentage, two significant digits, no exponent.
std::string pct(double frac) {
  double v = 100.0 * frac;
  if (!(v > 0)) return "0 %";
  int decimals = std::max(0, 1 - int(std::floor(std::log10(v))));
  char b[64];
  std::snprintf(b, sizeof b, "%.*f %%", decimals, v);
  return b;
}

// The run with the median rate, of round trips measured in turn.
RtStats med_rt(std::vector<RtStats> v) {
  std::sort(v.begin(), v.end(), [](const RtStats& a, const RtStats& b) { return a.rate < b.rate; });
  return v[v.size() / 2];
}

void quick() {
  // One line per Lua version (the driver collects them into one table).
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  std::vector<double> cs, cts, os, ds, p50s, rates;
  for (int i = 0; i < opt.reps; ++i) {  // interleaved, as in full()
    cs.push_back(ceil_throughput(1, n_ceil, CeilStyle::swap));
    cts.push_back(ceil_throughput(1, n_ceil, CeilStyle::table));
    os.push_back(ours_throughput(1, n_ours, Drain::poll));
    ds.push_back(ours_throughput(1, n_ceil, Drain::dispatch));
    RtStats r = ours_roundtrip(scaled(20000), Wake::busy);
    p50s.push_back(r.p50);
    rates.push_back(r.rate);
  }
  double c = median(cs), ct = median(cts), o = median(os), d = median(ds);
  std::printf("| %s | %s | %s | %s (%s) | %s (%s) | %s | %.1f µs |\n", opt.label.c_str(),
              fmt_rate(c).c_str(), fmt_rate(ct).c_str(), fmt_rate(o).c_str(),
              fmt_ratio(o, c).c_str(), fmt_rate(d).c_str(), fmt_ratio(d, c).c_str(),
              fmt_rate(median(rates)).c_str(), median(p50s));
}

// --poll P: the poll() path against the table ceiling with P producers,
// interleaved, one line (for working on that path).
void poll_probe(int p) {
  long n = scaled(1000000);
  std::vector<double> ct, po, di;
  for (int i = 0; i < opt.reps; ++i) {
    ct.push_back(ceil_throughput(p, n, CeilStyle::table));
    po.push_back(ours_throughput(p, n, Drain::poll));
    di.push_back(ours_throughput(p, n, Drain::dispatch));
  }
  std::printf("%dP: table ceiling %s, poll() %s (%s), dispatch() %s\n", p,
              fmt_rate(median(ct)).c_str(), fmt_rate(median(po)).c_str(),
              fmt_ratio(median(po), median(ct)).c_str(), fmt_rate(median(di)).c_str());
  std::vector<double> cd, pd;
  for (int i = 0; i < opt.reps; ++i) {
    cd.push_back(ceil_drain_at_depth(scaled(100000), nullptr, CeilStyle::table));
    pd.push_back(ours_drain_at_depth(scaled(100000), nullptr, Drain::poll));
  }
  std::printf("drain alone, 100 k: table ceiling %s, poll() %s (%s)\n",
              fmt_rate(median(cd)).c_str(), fmt_rate(median(pd)).c_str(),
              fmt_ratio(median(pd), median(cd)).c_str());
}

// The E rows: deliver -> callback latency in each event loop (issue 6).
void loop_rows() {
  header("### Event loops: deliver → callback running in the loop (1 producer, one item "
         "every 200 µs, the loop asleep; lua/darksidesync/ helpers)");
  {
    long n_lat = scaled(3000);
    const int gap = 200;
    std::vector<double> c = ceil_latency(n_lat, gap);
    RtStats ec = percentiles(c, 1);
    FILE* f = dat("loops.dat");
    if (f) {
      std::fprintf(f, "# loop p50 p99 p99.9 (µs)\n");
      std::fprintf(f, "\"ceiling eventfd\" %.2f %.2f %.2f\n", ec.p50, ec.p99, ec.p999);
    }
    auto pct3 = [](const RtStats& r) {
      return fmt("%.1f", r.p50) + " / " + fmt("%.1f", r.p99) + " / " + fmt("%.0f µs", r.p999);
    };
    row("E0", "ceiling: bare queue, asleep on its eventfd, lua_pcall per item: p50 / p99 / p99.9",
        pct3(ec), "1.00× (p50)", "", "");
    const struct {
      const char* loop;
      const char* what;
    } loops[] = {{"luv", "luv: darksidesync.luv watcher (uv_poll on getfd()), uv.run()"},
                 {"cqueues", "cqueues: darksidesync.cqueues attach(cq), cq:loop()"},
                 {"copas", "Copas: darksidesync.copas addreader(), copas.step()"},
                 {"select", "socket.select on darksidesync.select, then dispatch()"},
                 {"wait", "no loop: wait(), then dispatch()"}};
    int e = 1;
    for (const auto& l : loops) {
      std::vector<double> v = loop_latency(l.loop, n_lat, gap);
      std::string id = "E" + std::to_string(e++);
      if (v.empty()) {
        row(id, std::string(l.what) + ": p50 / p99 / p99.9", "not installed", "", "", "");
        continue;
      }
      RtStats r = percentiles(v, 1);
      if (f) std::fprintf(f, "\"%s\" %.2f %.2f %.2f\n", l.loop, r.p50, r.p99, r.p999);
      row(id, std::string(l.what) + ": p50 / p99 / p99.9", pct3(r),
          fmt_ratio(r.p50, ec.p50) + " (p50)", "",
          "p99 vs ceiling " + fmt_ratio(r.p99, ec.p99) +
              fmt("; items %.0f", double(v.size())));
      must(long(v.size()) == n_lat, std::string(id) + ": the loop ran " +
                                        fmt("%.0f", double(v.size())) + " items of " +
                                        std::to_string(n_lat));
    }
    if (f) std::fclose(f);
  }
}

void full() {
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  const int P[] = {1, 2, 4, 8};
  const CeilStyle styles[] = {CeilStyle::swap, CeilStyle::table, CeilStyle::pop1};
  double luv_lossless = luv_get("work_rate");

  header(("### Fire and forget, producers and consumer running together (" +
          opt.label + ")").c_str());
  // tp keys: the ceiling styles (0-2), then ours by way of taking items.
  enum { kPoll = 3, kDispatch = 4, kFd = 5 };
  std::map<std::pair<int, int>, double> tp;
  std::map<int, double> ceil_at, ceil_writes, fd_notices, fd_polls;
  // Repetitions interleaved (each one runs every style), so that a swing in
  // the machine's load hits ceilings and ours alike.
  for (int p : P) {
    std::map<int, std::vector<double>> v;
    std::vector<double> cw, fn, fp;
    for (int r = 0; r < opt.reps; ++r) {
      for (CeilStyle s : styles) {
        double w = 0;
        v[int(s)].push_back(ceil_throughput(p, n_ceil, s, &w));
        if (s == CeilStyle::swap) cw.push_back(w);
      }
      v[kPoll].push_back(ours_throughput(p, n_ours, Drain::poll));
      v[kDispatch].push_back(ours_throughput(p, n_ceil, Drain::dispatch));
      FfRun fr;
      fr.producers = p;
      fr.drain = Drain::fd;
      FfStats f = ours_ff(fr, n_ceil);
      v[kFd].push_back(f.rate);
      fn.push_back(f.notices);
      fp.push_back(f.polls);
    }
    for (auto& kv : v) tp[{kv.first, p}] = median(kv.second);
    ceil_at[p] = tp[{int(CeilStyle::swap), p}];
    ceil_writes[p] = median(cw);
    fd_notices[p] = median(fn);
    fd_polls[p] = median(fp);
  }
  int k = 1;
  for (CeilStyle s : styles)
    for (int p : P) {
      double v = tp[{int(s), p}];
      row("C" + std::to_string(k++), std::string(style_name(s)) + ", " + std::to_string(p) + "P",
          fmt_rate(v), fmt_ratio(v, ceil_at[p]), "");
    }
  k = 1;
  for (int p : P) {
    double v = tp[{kPoll, p}];
    row("F" + std::to_string(k++),
        "ours: deliver → poll() + cb(unpack(args)), " + std::to_string(p) + "P",
        fmt_rate(v), fmt_ratio(v, ceil_at[p]), fmt_ratio(v, luv_lossless),
        "vs table ceiling " + fmt_ratio(v, tp[{int(CeilStyle::table), p}]));
  }
  for (int p : P) {
    double v = tp[{kDispatch, p}];
    std::string notes = "vs poll() (F" + std::to_string(k - 4) + ") " + fmt_ratio(v, tp[{kPoll, p}]);
    if (p > 1) notes += "; vs 1P " + fmt_ratio(v, tp[{kDispatch, 1}]);
    row("F" + std::to_string(k++), "ours: deliver → dispatch(), " + std::to_string(p) + "P",
        fmt_rate(v), fmt_ratio(v, ceil_at[p]), fmt_ratio(v, luv_lossless), notes);
  }

  header("### Sleeping consumer: poll(2) on getfd(), then dispatch() (producers flooding)");
  k = 1;
  for (int p : P) {
    double v = tp[{kFd, p}];
    std::string notes =
        "vs busy dispatch() (F" + std::to_string(k + 4) + ") " + fmt_ratio(v, tp[{kDispatch, p}]);
    row("W" + std::to_string(k++), "ours: items/s, " + std::to_string(p) + "P", fmt_rate(v),
        fmt_ratio(v, ceil_at[p]), fmt_ratio(v, luv_lossless), notes);
  }
  for (int p : P)
    row("W" + std::to_string(k++),
        "ours: wake-up writes per item (stats: notified / delivered), " + std::to_string(p) + "P",
        pct(fd_notices[p]), fmt_ratio(fd_notices[p], ceil_writes[p]), "",
        "ceiling's eventfd writes " + pct(ceil_writes[p]) + "; poll(2) calls " +
            pct(fd_polls[p]) + " of items");
  if (FILE* f = dat("throughput.dat")) {
    std::fprintf(f, "# producers ceiling_swap ceiling_table ceiling_pop1 ours_poll ours_dispatch"
                    " ours_fd_dispatch (items/s)\n");
    for (int p : P) {
      std::fprintf(f, "%d", p);
      for (int s = 0; s <= kFd; ++s) std::fprintf(f, " %.0f", tp[{s, p}]);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
  }

  header("### Queue depth: fill with no consumer, then drain alone (1 producer)");
  k = 1;
  for (long depth : {1000L, 10000L, 100000L, 1000000L}) {
    if (opt.scale < 1) depth = scaled(depth);  // smoke runs
    std::vector<double> cfs, ofs, cds, ods, dds;
    for (int r = 0; r < opt.reps; ++r) {
      double cf = 0, of = 0;
      cds.push_back(ceil_drain_at_depth(depth, &cf));
      ods.push_back(ours_drain_at_depth(depth, &of, Drain::poll));
      dds.push_back(ours_drain_at_depth(depth, nullptr, Drain::dispatch));
      cfs.push_back(cf);
      ofs.push_back(of);
    }
    double cd = median(cds), od = median(ods), dd = median(dds);
    std::string d = depth_name(depth);
    row("D" + std::to_string(k++), "ours: drain " + d + " queued items, poll()", fmt_rate(od),
        fmt_ratio(od, cd), "", "ceiling drains at " + fmt_rate(cd));
    row("D" + std::to_string(k++), "ours: drain " + d + " queued items, dispatch()", fmt_rate(dd),
        fmt_ratio(dd, cd), "", "vs poll() " + fmt_ratio(dd, od));
    row("D" + std::to_string(k++), "ours: fill to " + d + " (deliver, no consumer)",
        fmt_rate(median(ofs)), fmt_ratio(median(ofs), median(cfs)), "",
        "ceiling fills at " + fmt_rate(median(cfs)));
  }

  header("### Blocking round trips (1 producer; latency measured around deliver)");
  long n_busy = scaled(40000), n_sleep = scaled(10000);
  auto rt_rows = [&](const char* id, const char* what, RtStats o, RtStats c,
                     bool with_luv) {
    double lr = with_luv ? luv_get("rt_rate") : -1;
    row(std::string(id) + "a", std::string(what) + ": round trips/s", fmt_rate(o.rate),
        fmt_ratio(o.rate, c.rate), fmt_ratio(o.rate, lr),
        "ceiling " + fmt_rate(c.rate));
    row(std::string(id) + "b", std::string(what) + ": p50 / p99 / p99.9",
        fmt("%.1f", o.p50) + " / " + fmt("%.1f", o.p99) + " / " + fmt("%.0f µs", o.p999),
        fmt_ratio(o.p50, c.p50) + " (p50)", with_luv ? fmt_ratio(o.p50, luv_get("rt_p50")) + " (p50)" : "",
        "ceiling " + fmt("%.1f", c.p50) + " / " + fmt("%.1f", c.p99) + " / " + fmt("%.0f µs", c.p999));
  };
  // 3 interleaved repetitions; the one with the median rate is reported.
  std::vector<RtStats> vcb, vob, vcs, vos, vof, vow;
  for (int i = 0; i < 3; ++i) {
    vcb.push_back(ceil_roundtrip(n_busy, false));
    vob.push_back(ours_roundtrip(n_busy, Wake::busy));
    vcs.push_back(ceil_roundtrip(n_sleep, true));
    vos.push_back(ours_roundtrip(n_sleep, Wake::udp));
    vof.push_back(ours_roundtrip(n_sleep, Wake::fd));
    vow.push_back(ours_roundtrip(n_sleep, Wake::wait));
  }
  RtStats cb_ = med_rt(vcb), ob = med_rt(vob), cs = med_rt(vcs), os = med_rt(vos);
  RtStats of = med_rt(vof), ow = med_rt(vow);
  rt_rows("R1", "busy Lua loop (poll, yield when empty)", ob, cb_, true);
  rt_rows("R2", "sleeping Lua loop (UDP notice + socket.select + dss helper)", os, cs, true);
  rt_rows("R3", "sleeping Lua loop (poll(2) on getfd(), then dispatch())", of, cs, true);
  rt_rows("R4", "sleeping Lua loop (wait(), then dispatch())", ow, cs, true);
  if (FILE* f = dat("latency.dat")) {
    std::fprintf(f, "# mode p50 p99 p99.9 (µs)\n");
    auto line = [&](const char* name, double a, double b, double c) {
      std::fprintf(f, "\"%s\" %.2f %.2f %.2f\n", name, a, b, c);
    };
    line("ceiling busy", cb_.p50, cb_.p99, cb_.p999);
    line("ours busy poll()", ob.p50, ob.p99, ob.p999);
    line("ceiling eventfd", cs.p50, cs.p99, cs.p999);
    line("ours getfd+poll(2)", of.p50, of.p99, of.p999);
    line("ours wait()", ow.p50, ow.p99, ow.p999);
    line("ours UDP+select", os.p50, os.p99, os.p999);
    if (luv_get("rt_p50") > 0)
      line("luv async+pipe", luv_get("rt_p50"), luv_get("rt_p99"), luv_get("rt_p999"));
    std::fclose(f);
  }

  loop_rows();

  header("### UDP notification, per-item mode (1 producer flooding; the dss helper drains)");
  long n_udp = scaled(100000);
  auto med_udp = [](std::vector<UdpStats> v) {
    std::sort(v.begin(), v.end(), [](const UdpStats& a, const UdpStats& b) { return a.rate < b.rate; });
    return v[v.size() / 2];
  };
  auto worst_stranded = [](const std::vector<UdpStats>& v) {
    double w = 0;
    for (auto& x : v) w = std::max(w, x.stranded);
    return w;
  };
  std::vector<UdpStats> us;
  std::vector<double> bare;
  for (int i = 0; i < 3; ++i) {  // interleaved with the bare sendto ceiling
    bare.push_back(bare_sendto_rate(n_udp));
    us.push_back(ours_udp(n_udp, false));
  }
  UdpStats u = med_udp(us);
  double bare_rate = median(bare);
  std::vector<double> sends;
  for (auto& x : us) sends.push_back(x.send_rate);
  row("U0", "ceiling: bare sendto of the notice to 127.0.0.1 (a thread reading it)",
      fmt_rate(bare_rate), "1.00×", "", "timed on the sender");
  row("U1", "items/s run by the dss helper loop", fmt_rate(u.rate), fmt_ratio(u.rate, bare_rate),
      "", "vs bare sendto (U0), target ≥ 0.8×; producer's deliver rate " +
              fmt_rate(median(sends)) + " (" + fmt_ratio(median(sends), bare_rate) +
              "); vs notification off (F1): " + fmt_ratio(u.rate, tp[{kPoll, 1}]));
  row("U2", "datagrams sent / items delivered", fmt("%.0f", u.sent) + " / " + fmt("%.0f", double(n_udp)),
      "", "", fmt("send failures %.0f", u.failed));
  row("U3", "datagrams read by the helper / items run", fmt("%.0f", u.reads) + " / " + fmt("%.0f", u.run),
      "", "", fmt("kernel UDP RcvbufErrors during the run: %.0f", u.dropped));
  row("U4", "items stranded when the helper's socket went quiet (must be 0)",
      fmt("%.0f", u.stranded), "", "", fmt("worst of 3 runs: %.0f", worst_stranded(us)));
  UdpStats paced = ours_udp(scaled(10000), false, 50);
  row("U5", "paced producer (50 µs sleep per item): items/s / stranded",
      fmt_rate(paced.rate) + " / " + fmt("%.0f", paced.stranded), "", "",
      fmt("datagrams read %.0f, ", paced.reads) + fmt("kernel drops %.0f", paced.dropped));

  g_dss_coalesce = dss_has_coalesce();
  header(g_dss_coalesce
             ? "### UDP notification, coalesced mode (1 producer flooding; the dss helper: "
               "getsocket(\"coalesce\") and gethandler(\"dispatch\"), in a select loop)"
             : "### UDP notification, coalesced mode (1 producer flooding; setport(port, "
               "\"coalesce\"), a LuaSocket select loop: one datagram read, dispatch() until "
               "queuesize() is 0)");
  std::vector<UdpStats> vc;
  for (int i = 0; i < 3; ++i) vc.push_back(ours_udp(n_udp, true));
  UdpStats c = med_udp(vc);
  row("U6", "items/s run by the select loop", fmt_rate(c.rate), fmt_ratio(c.rate, ceil_at[1]), "",
      "vs per-item mode (U1) " + fmt_ratio(c.rate, u.rate) + "; vs busy dispatch() (F5) " +
          fmt_ratio(c.rate, tp[{kDispatch, 1}]));
  row("U7", "datagrams sent per item (stats: notified / items)",
      pct(c.sent / double(n_udp)), "", "",
      fmt("datagrams sent: %.0f, ", c.sent) + fmt("send failures %.0f", c.failed));
  row("U8", "datagrams read by the loop / items run", fmt("%.0f", c.reads) + " / " + fmt("%.0f", c.run),
      "", "", fmt("kernel UDP RcvbufErrors during the run: %.0f", c.dropped));
  row("U9", "items stranded when the socket went quiet (must be 0)", fmt("%.0f", c.stranded), "",
      "", fmt("worst of 3 runs: %.0f", worst_stranded(vc)));
  must(worst_stranded(vc) == 0, "U9: coalesced UDP mode stranded " +
                                    fmt("%.0f", worst_stranded(vc)) + " items");

  header("### API 2v0 deliver2, and the bounded queue (dispatch() drains, busy loop)");
  {
    std::vector<double> v1, v2, f1, f2, bq, ub, mq;
    long n_fill = scaled(100000);
    for (int r = 0; r < opt.reps; ++r) {
      FfRun a;
      a.drain = Drain::dispatch;
      v1.push_back(ours_ff(a, n_ceil).rate);
      a.v2 = true;
      v2.push_back(ours_ff(a, n_ceil).rate);
      double fa = 0, fb = 0;
      ours_drain_at_depth(n_fill, &fa, Drain::dispatch, false);
      ours_drain_at_depth(n_fill, &fb, Drain::dispatch, true);
      f1.push_back(fa);
      f2.push_back(fb);
      FfRun b;
      b.producers = 4;
      b.drain = Drain::dispatch;
      ub.push_back(ours_ff(b, n_ceil).rate);
      b.maxqueue = 1024;
      FfStats s = ours_ff(b, n_ceil);
      bq.push_back(s.rate);
      mq.push_back(s.maxqueued);
    }
    double a1 = median(v1), a2 = median(v2), b = median(bq), m = *std::max_element(mq.begin(), mq.end());
    row("A1", "ours: 1v0 deliver → dispatch(), 1P", fmt_rate(a1), fmt_ratio(a1, ceil_at[1]), "", "");
    row("A2", "ours: 2v0 deliver2 (flags 0, no timeout) → dispatch(), 1P", fmt_rate(a2),
        fmt_ratio(a2, ceil_at[1]), "", "vs 1v0 (A1) " + fmt_ratio(a2, a1) + " (should be ~1)");
    row("A3", "ours: fill to " + depth_name(n_fill) + " with deliver2 (no consumer)",
        fmt_rate(median(f2)), "", "",
        "vs 1v0 deliver " + fmt_ratio(median(f2), median(f1)) + " (it fills at " +
            fmt_rate(median(f1)) + ")");
    row("A4", "ours: setmaxqueue(1024), 4P deliver → dispatch()", fmt_rate(b),
        fmt_ratio(b, ceil_at[4]), "",
        "vs unbounded, same reps " + fmt_ratio(b, median(ub)) + "; stats maxqueued " +
            fmt("%.0f", m) + " (must be ≤ 1024)");
    must(m <= 1024, "A4: stats().maxqueued " + fmt("%.0f", m) + " with setmaxqueue(1024)");
  }

  header("### Memory (200 k queued, payload carried in pData: no client allocation)");
  MemStats m = memory(200000);
  row("M1", "bytes per queued item, RSS delta", fmt("%.1f B", m.rss_per_item),
      fmt_ratio(m.rss_per_item, m.ceil_heap_per_item), "", "");
  row("M2", "bytes per queued item, malloc'd (mallinfo2)", fmt("%.1f B", m.heap_per_item),
      fmt_ratio(m.heap_per_item, m.ceil_heap_per_item), "",
      "ceiling deque " + fmt("%.1f B", m.ceil_heap_per_item));
  row("M3", "retained after full drain + GC: malloc'd / Lua heap / RSS",
      fmt("%.0f B", m.heap_retained) + " / " + fmt("%.0f B", m.lua_retained) + " / " +
          fmt("%.0f B", m.rss_retained),
      "", "", "must be ~0");

  if (!luv.empty()) {
    header("### luv (Debian lua-luv, same invocation, run by the lua interpreter)");
    double sent = luv_get("flood_sent"), got = luv_get("flood_delivered");
    row("L1", "async:send flood from a thread: values delivered / sent",
        fmt("%.0f", got) + " / " + fmt("%.0f", sent), "", "",
        fmt("%.1f%% lost", 100.0 * (1 - got / sent)));
    row("L2", "lossless route: uv.new_work (thread pool → Lua), items/s",
        fmt_rate(luv_get("work_rate")), fmt_ratio(luv_get("work_rate"), ceil_at[1]), "",
        "ours 1P: poll() (F1) " + fmt_ratio(tp[{kPoll, 1}], luv_get("work_rate")) +
            ", dispatch() (F5) " + fmt_ratio(tp[{kDispatch, 1}], luv_get("work_rate")));
    row("L3", "blocking round trip (async:send + pipe reply): round trips/s",
        fmt_rate(luv_get("rt_rate")), fmt_ratio(luv_get("rt_rate"), cs.rate) + " (vs eventfd)", "",
        "p50 / p99 / p99.9 " + fmt("%.1f", luv_get("rt_p50")) + " / " + fmt("%.1f", luv_get("rt_p99")) +
            " / " + fmt("%.0f µs", luv_get("rt_p999")));
  }
}

void load_luv() {
  if (opt.luv_file.empty()) return;
  FILE* f = std::fopen(opt.luv_file.c_str(), "r");
  if (!f) return;
  char key[128];
  double v;
  while (std::fscanf(f, "%127s %lf", key, &v) == 2) luv[key] = v;
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--module-dir") opt.module_dir = next();
    else if (a == "--lua-dir") opt.lua_dir = next();
    else if (a == "--out-dir") opt.out_dir = next();
    else if (a == "--luv") opt.luv_file = next();
    else if (a == "--label") opt.label = next();
    else if (a == "--reps") opt.reps = std::atoi(next().c_str());
    else if (a == "--scale") opt.scale = std::atof(next().c_str());
    else if (a == "--quick") opt.quick = true;
    else if (a == "--poll") opt.poll_probe = std::atoi(next().c_str());
    else if (a == "--loops") opt.loops = true;
    else {
      std::fprintf(stderr,
                   "usage: dss_bench [--quick | --poll P | --loops] [--reps N] [--scale X] [--label L]\n"
                   "                 [--module-dir D] [--lua-dir D] [--out-dir D] [--luv FILE]\n");
      return 2;
    }
  }
  if (opt.label.empty()) opt.label = LUA_VERSION;
  load_luv();
  if (opt.poll_probe > 0) poll_probe(opt.poll_probe);
  else if (opt.loops) loop_rows();
  else if (opt.quick) quick();
  else full();
  for (auto& v : violations) std::fprintf(stderr, "bench: FAILED: %s\n", v.c_str());
  return violations.empty() ? 0 : 3;
}
