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
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

lua_State* new_state() {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushcfunction(L, l_yield);
  lua_setglobal(L, "bench_yield");
  lua_pushcfunction(L, l_stopped);
  lua_setglobal(L, "bench_stopped");
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
  ~CeilQ() { close(efd); }
  void push(long x) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu);
      was_empty = q.empty();
      q.push_back(x);
    }
    if (was_empty) {
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

// Items/s with P producers running concurrently with the consumer.
double ceil_throughput(int producers, long total, CeilStyle style) {
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
  lua_close(L);
  return double(total) / s;
}

// Drain rate of a queue prefilled with `depth` items (swap style).
double ceil_drain_at_depth(long depth, double* fill_rate) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  int fref = ref_global(L, "cb");
  CeilQ q;
  std::thread prod([&] {
    auto t = Clock::now();
    for (long i = 0; i < depth; ++i) q.push(i);
    if (fill_rate) *fill_rate = double(depth) / secs_since(t);
  });
  prod.join();
  auto t0 = Clock::now();
  ceil_consume(L, q, depth, CeilStyle::swap, fref);
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

// A Lua state with darksidesync required and the bench registered as a
// client library; returns the utilid.
void* ours_state(lua_State** out) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  run(L, R"(
    darksidesync = require "darksidesync"
    local poll, yield, stopped = darksidesync.poll, bench_yield, bench_stopped
    -- busy loop: poll; run the callback; on empty, yield the CPU
    function drain(target)
      while n < target do
        local r, f, a = poll()
        if f then f(unpack(a)) elseif r == -1 then yield() end
      end
      return n
    end
    function rt(wt, x) wt(x + 1) end
    function serve_busy()
      while not stopped() do
        local r, f, a = poll()
        if f then f(unpack(a)) elseif r == -1 then yield() end
      end
    end
    -- sleeping loop: socket.select on the dss helper's socket
    function serve_sleeping()
      local socket = require "socket"
      local dss = require "dss"
      local skt = assert(dss.getsocket())
      local handler = dss.gethandler()
      while not stopped() do
        local r = socket.select({skt}, nil, 0.2)
        if r[1] then handler(skt) end
      end
    end
    -- UDP per-item mode, drained by the dss helper until the socket stays
    -- quiet: returns items run, datagrams read, items left queued, seconds
    -- to the last item
    function drain_udp(target, quiet)
      local socket = require "socket"
      local dss = require "dss"
      local skt = assert(dss.getsocket())
      local handler = dss.gethandler()
      local reads, t0, tlast = 0, socket.gettime(), socket.gettime()
      while true do
        local r = socket.select({skt}, nil, quiet)
        if not r[1] then
          if n >= target or bench_stopped() then break end
        else
          handler(skt); reads = reads + 1
          tlast = socket.gettime()
        end
      end
      last_reads, last_left, last_secs = reads, darksidesync.queuesize(), tlast - t0
      return n
    end
  )");
  g_cbref = ref_global(L, "cb");
  g_rtref = ref_global(L, "rt");
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  lua_getfield(L, -1, DSS_API_1v0_KEY);
  g_api = static_cast<const DSS_api_1v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 2);
  if (!g_api) {
    std::fprintf(stderr, "bench: no DSS API 1v0 in the registry\n");
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

void deliver_ff(void* utilid, long x) {
  int rc = g_api->deliver(utilid, decode_ff, nullptr,
                          reinterpret_cast<void*>(std::intptr_t(x)));
  if (rc < DSS_SUCCESS) {
    std::fprintf(stderr, "bench: deliver failed: %d\n", rc);
    std::abort();
  }
}

double ours_throughput(int producers, long total) {
  lua_State* L;
  void* utilid = ours_state(&L);
  std::atomic<int> go{0};
  std::vector<std::thread> ths;
  long per = total / producers;
  total = per * producers;
  for (int p = 0; p < producers; ++p)
    ths.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire)) sched_yield();
      for (long i = 0; i < per; ++i) deliver_ff(utilid, p * per + i);
    });
  auto t0 = Clock::now();
  go.store(1, std::memory_order_release);
  call(L, "drain", {double(total)});
  double s = secs_since(t0);
  for (auto& t : ths) t.join();
  lua_close(L);
  return double(total) / s;
}

double ours_drain_at_depth(long depth, double* fill_rate) {
  lua_State* L;
  void* utilid = ours_state(&L);
  std::thread prod([&] {
    auto t = Clock::now();
    for (long i = 0; i < depth; ++i) deliver_ff(utilid, i);
    if (fill_rate) *fill_rate = double(depth) / secs_since(t);
  });
  prod.join();
  auto t0 = Clock::now();
  call(L, "drain", {double(depth)});
  double s = secs_since(t0);
  lua_close(L);
  return double(depth) / s;
}

RtStats ours_roundtrip(long count, bool sleeping) {
  lua_State* L;
  void* utilid = ours_state(&L);
  g_stop.store(false);
  std::vector<double> lat;
  lat.reserve(size_t(count));
  double seconds = 0;
  std::atomic<bool> ready{!sleeping};
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
  });
  if (sleeping) {
    // The helper binds its socket and calls setport inside serve_sleeping;
    // bind it first so that no request is sent before the port is set.
    run(L, "require('dss').getsocket()");
    ready.store(true);
    call(L, "serve_sleeping", {});
  } else {
    call(L, "serve_busy", {});
  }
  prod.join();
  lua_close(L);
  return percentiles(lat, seconds);
}

struct UdpStats {
  double rate = 0;       // items/s, dss helper loop
  double sent = 0;       // datagrams sent (deliver returned SUCCESS)
  double failed = 0;     // deliver returned UDP_SEND_FAILED
  double reads = 0;      // datagrams the helper read
  double run = 0;        // items the helper ran
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

// pace_us > 0: the producer sleeps that long between deliveries.
UdpStats ours_udp(long total, int pace_us = 0) {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, "require('dss').getsocket()");
  g_stop.store(false);
  std::atomic<long> sent{0}, failed{0};
  double drops0 = udp_rcvbuf_errors();
  std::thread prod([&] {
    for (long i = 0; i < total; ++i) {
      if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
      int rc = g_api->deliver(utilid, decode_ff, nullptr,
                              reinterpret_cast<void*>(std::intptr_t(i)));
      if (rc == DSS_SUCCESS) ++sent;
      else if (rc == DSS_ERR_UDP_SEND_FAILED) ++failed;
      else std::abort();
    }
    // Stop once every item was delivered and the socket went quiet.
    g_stop.store(true);
  });
  call(L, "drain_udp", {double(total), 0.3});
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
  u.sent = double(sent.load());
  u.failed = double(failed.load());
  u.dropped = udp_rcvbuf_errors() - drops0;
  lua_close(L);
  return u;
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

void quick() {
  // One line per Lua version (the driver collects them into one table).
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  std::vector<double> cs, cts, os, p50s, rates;
  for (int i = 0; i < opt.reps; ++i) {  // interleaved, as in full()
    cs.push_back(ceil_throughput(1, n_ceil, CeilStyle::swap));
    cts.push_back(ceil_throughput(1, n_ceil, CeilStyle::table));
    os.push_back(ours_throughput(1, n_ours));
    RtStats r = ours_roundtrip(scaled(20000), false);
    p50s.push_back(r.p50);
    rates.push_back(r.rate);
  }
  double c = median(cs), ct = median(cts), o = median(os);
  std::printf("| %s | %s | %s | %s (%s) | %s | %.1f µs |\n", opt.label.c_str(),
              fmt_rate(c).c_str(), fmt_rate(ct).c_str(), fmt_rate(o).c_str(),
              fmt_ratio(o, c).c_str(), fmt_rate(median(rates)).c_str(), median(p50s));
}

void full() {
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  const int P[] = {1, 2, 4, 8};
  const CeilStyle styles[] = {CeilStyle::swap, CeilStyle::table, CeilStyle::pop1};
  double luv_lossless = luv_get("work_rate");

  header(("### Fire and forget, producers and consumer running together (" +
          opt.label + ")").c_str());
  std::map<int, double> ceil_at;
  std::map<std::pair<int, int>, double> tp;
  // Repetitions interleaved (each one runs every style), so that a swing in
  // the machine's load hits ceilings and ours alike.
  for (int p : P) {
    std::map<int, std::vector<double>> v;
    for (int r = 0; r < opt.reps; ++r) {
      for (CeilStyle s : styles) v[int(s)].push_back(ceil_throughput(p, n_ceil, s));
      v[3].push_back(ours_throughput(p, n_ours));
    }
    for (auto& kv : v) tp[{kv.first, p}] = median(kv.second);
    ceil_at[p] = tp[{int(CeilStyle::swap), p}];
  }
  int k = 1;
  for (CeilStyle s : styles)
    for (int p : P) {
      double v = tp[{int(s), p}];
      if (v < 0) continue;
      row("C" + std::to_string(k++), std::string(style_name(s)) + ", " + std::to_string(p) + "P",
          fmt_rate(v), fmt_ratio(v, ceil_at[p]), "");
    }
  k = 1;
  for (int p : P) {
    double v = tp[{3, p}];
    row("F" + std::to_string(k++),
        "ours: deliver → poll() + cb(unpack(args)), " + std::to_string(p) + "P",
        fmt_rate(v), fmt_ratio(v, ceil_at[p]), fmt_ratio(v, luv_lossless),
        "vs table ceiling " + fmt_ratio(v, tp[{int(CeilStyle::table), p}]));
  }
  if (FILE* f = dat("throughput.dat")) {
    std::fprintf(f, "# producers ceiling_swap ceiling_table ceiling_pop1 ours (items/s)\n");
    for (int p : P) {
      auto g = [&](int s) { double v = tp[{s, p}]; return v < 0 ? std::string("NaN") : fmt("%.0f", v); };
      std::fprintf(f, "%d %s %s %s %s\n", p, g(0).c_str(), g(1).c_str(), g(2).c_str(), g(3).c_str());
    }
    std::fclose(f);
  }

  header("### Queue depth: fill with no consumer, then drain alone (1 producer)");
  k = 1;
  for (long depth : {1000L, 10000L, 100000L, 1000000L}) {
    std::vector<double> cfs, ofs, cds, ods;
    for (int r = 0; r < opt.reps; ++r) {
      double cf = 0, of = 0;
      cds.push_back(ceil_drain_at_depth(depth, &cf));
      ods.push_back(ours_drain_at_depth(depth, &of));
      cfs.push_back(cf);
      ofs.push_back(of);
    }
    double cd = median(cds), od = median(ods);
    std::string d = depth >= 1000000 ? "1 M" : std::to_string(depth / 1000) + " k";
    row("D" + std::to_string(k++), "ours: drain " + d + " queued items", fmt_rate(od),
        fmt_ratio(od, cd), "", "ceiling drains at " + fmt_rate(cd));
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
  std::vector<RtStats> vcb, vob, vcs, vos;
  for (int i = 0; i < 3; ++i) {
    vcb.push_back(ceil_roundtrip(n_busy, false));
    vob.push_back(ours_roundtrip(n_busy, false));
    vcs.push_back(ceil_roundtrip(n_sleep, true));
    vos.push_back(ours_roundtrip(n_sleep, true));
  }
  auto med_rt = [](std::vector<RtStats> v) {
    std::sort(v.begin(), v.end(), [](const RtStats& a, const RtStats& b) { return a.rate < b.rate; });
    return v[v.size() / 2];
  };
  RtStats cb_ = med_rt(vcb), ob = med_rt(vob), cs = med_rt(vcs), os = med_rt(vos);
  rt_rows("R1", "busy Lua loop (poll, yield when empty)", ob, cb_, true);
  rt_rows("R2", "sleeping Lua loop (UDP notice + socket.select + dss helper)", os, cs, true);
  if (FILE* f = dat("latency.dat")) {
    std::fprintf(f, "# mode p50 p99 p99.9 (µs)\n");
    auto line = [&](const char* name, double a, double b, double c) {
      std::fprintf(f, "\"%s\" %.2f %.2f %.2f\n", name, a, b, c);
    };
    line("ceiling busy", cb_.p50, cb_.p99, cb_.p999);
    line("ours busy", ob.p50, ob.p99, ob.p999);
    line("ceiling eventfd", cs.p50, cs.p99, cs.p999);
    line("ours UDP+select", os.p50, os.p99, os.p999);
    if (luv_get("rt_p50") > 0)
      line("luv async+pipe", luv_get("rt_p50"), luv_get("rt_p99"), luv_get("rt_p999"));
    std::fclose(f);
  }

  header("### UDP notification, per-item mode (1 producer flooding; the dss helper drains)");
  long n_udp = scaled(100000);
  std::vector<UdpStats> us;
  for (int i = 0; i < 3; ++i) us.push_back(ours_udp(n_udp));
  std::sort(us.begin(), us.end(), [](const UdpStats& a, const UdpStats& b) { return a.rate < b.rate; });
  UdpStats u = us[1];
  double worst_stranded = 0;
  for (auto& x : us) worst_stranded = std::max(worst_stranded, x.stranded);
  row("U1", "items/s run by the dss helper loop", fmt_rate(u.rate), fmt_ratio(u.rate, ceil_at[1]),
      "", "vs notification off (F1): " + fmt_ratio(u.rate, tp[{3, 1}]));
  row("U2", "datagrams sent / items delivered", fmt("%.0f", u.sent) + " / " + fmt("%.0f", double(n_udp)),
      "", "", fmt("send failures %.0f", u.failed));
  row("U3", "datagrams read by the helper / items run", fmt("%.0f", u.reads) + " / " + fmt("%.0f", u.run),
      "", "", fmt("kernel UDP RcvbufErrors during the run: %.0f", u.dropped));
  row("U4", "items stranded when the helper's socket went quiet (must be 0)",
      fmt("%.0f", u.stranded), "", "", fmt("worst of 3 runs: %.0f", worst_stranded));
  UdpStats paced = ours_udp(scaled(10000), 50);
  row("U5", "paced producer (50 µs sleep per item): items/s / stranded",
      fmt_rate(paced.rate) + " / " + fmt("%.0f", paced.stranded), "", "",
      fmt("datagrams read %.0f, ", paced.reads) + fmt("kernel drops %.0f", paced.dropped));

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
        "ours 1P (F1) " + fmt_ratio(tp[{3, 1}], luv_get("work_rate")));
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
    else {
      std::fprintf(stderr,
                   "usage: dss_bench [--quick] [--reps N] [--scale X] [--label L]\n"
                   "                 [--module-dir D] [--lua-dir D] [--out-dir D] [--luv FILE]\n");
      return 2;
    }
  }
  if (opt.label.empty()) opt.label = LUA_VERSION;
  load_luv();
  if (opt.quick) quick();
  else full();
  return 0;
}
