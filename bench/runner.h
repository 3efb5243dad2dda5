// runner.h -- what the scenarios of dss_bench share (issue 7; split into one
// scenario a file for issue 18, in the style of libuv's test/benchmark-*.c).
//
// dss_bench measures darksidesync against a bare queue->Lua ceiling in the
// same process. It embeds one Lua (the one this binary is linked against),
// builds the ceilings itself (a mutex + std::deque, an eventfd written only on
// empty -> non-empty), loads darksidesync with `require` and delivers through
// include/darksidesync_api.h only, as a client library would, and prints one
// markdown table: every row's figure and its ratio to the matching ceiling
// (and to luv, whose figures the driver hands in with --luv FILE). Figures are
// medians of --reps repetitions. See bench/README.md and docs/performance.md.
//
// The runner (runner.cpp: options, main, the table; runner-lua.cpp: the Lua
// states; client.cpp: darksidesync's client) is shared; each bench-*.cpp is
// one scenario group and prints its own section.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "darksidesync_api.h"

namespace bench {

using Clock = std::chrono::steady_clock;
double secs_since(Clock::time_point t0);
double now_ns();  // the steady clock in nanoseconds

// --- options (runner.cpp) --------------------------------------------------------

struct Options {
  std::string module_dir;  // the built darksidesync.so
  std::string lua_dir;     // lua/ (the dss helper)
  std::string out_dir;     // .dat files for the plots
  std::string luv_file;    // key value lines from luv.lua
  std::string label;       // Lua version label
  int reps = 5;
  double scale = 1.0;  // multiplies item counts
  bool quick = false;  // only the per-version summary rows
  int poll_probe = 0;  // --poll P
  bool loops = false;  // --loops: only the event-loop latency rows
  bool udp = false;     // --udp: only the U rows (profiling, issue 18 T8)
  bool rt = false;     // --rt: only the B rows and their targets (TB)
  bool sessions = false;  // --sessions: only the S rows and their targets (TS)
  int rt_p = 0;        // --rt-one P STYLE: one run of ours (or --rt-ceil) only
  int rt_style = 0;    // 0 busy (dispatch), 1 wait
  bool rt_ceil = false;
};
extern Options opt;

long scaled(long n);
double median(std::vector<double> v);

// Round trips and latencies: rate (round trips/s) and percentiles (µs).
struct RtStats {
  double rate = 0, p50 = 0, p99 = 0, p999 = 0;
};
RtStats percentiles(std::vector<double>& lat, double seconds);

// --- the table (runner.cpp) ---------------------------------------------------------

std::string fmt_rate(double v);
std::string fmt_ratio(double a, double b);
std::string fmt(const char* f, double v);
std::string pct(double frac);  // a fraction as a percentage
std::string depth_name(long d);
std::string p50_p99_p999(const RtStats& r);  // "p50 / p99 / p99.9 µs"
void row(const std::string& id, const std::string& what, const std::string& figure,
         const std::string& vs_ceil, const std::string& vs_luv,
         const std::string& notes = "");
void header(const char* title);
FILE* dat(const char* name);  // a .dat file in --out-dir, or null
double luv_get(const char* key);  // a figure of --luv FILE, or -1
bool have_luv();
// A row whose figure is a must: a violation makes dss_bench exit 3 after
// the whole table.
void must(bool ok, const std::string& what);

// --- memory (runner.cpp) -------------------------------------------------------------

long rss_bytes();   // the process's resident set
long heap_bytes();  // malloc'd bytes in use, every arena (pool threads malloc in their own)

// --- Lua states (runner-lua.cpp) -------------------------------------------------------

extern std::atomic<bool> g_stop;  // bench_stopped()
extern long g_polls;              // bench_pollfd() calls

// A Lua state with the bench_* functions and package paths at ours.
lua_State* new_state();
void run(lua_State* L, const char* code);
// Calls global `name` with number arguments; returns its first result.
double call(lua_State* L, const char* name, std::initializer_list<double> args);
int ref_global(lua_State* L, const char* name);
// Global `name` as a number (pops nothing, pushes nothing).
double global_number(lua_State* L, const char* name);
// The callback that counts (cb, count()) and the same behind an args table (cbt).
extern const char* const COMMON_LUA;

// --- the ceiling's queue: mutex + deque, coalesced eventfd ---------------------------

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

// --- ours: a client library of darksidesync (client.cpp) ---------------------------------

extern const DSS_api_1v0_t* g_api;
extern const DSS_api_2v0_t* g_api2;

// A Lua state with darksidesync required and the bench registered as a
// client library; returns the utilid.
void* ours_state(lua_State** out);
double stat(lua_State* L, const char* name);  // darksidesync.stats()[name]
// Fire and forget: pData carries the integer itself. v2: 2v0 deliver2.
void deliver_ff(void* utilid, long x, bool v2 = false);
int decode_ff(lua_State* L, void* data, void*);

// How Lua takes the items.
enum class Drain {
  poll,      // busy: poll() + f(unpack(args)), sched_yield when empty
  dispatch,  // busy: dispatch(), sched_yield when it ran nothing
  fd,        // sleeping: poll(2) on getfd(), then dispatch()
};

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

FfStats ours_ff(const FfRun& r, long total);
double ours_throughput(int producers, long total, Drain d = Drain::poll);
// Drain rate of a queue prefilled with `depth` items; *fill_rate: deliveries/s.
double ours_drain_at_depth(long depth, double* fill_rate, Drain d, bool v2 = false);

// How a round trip's Lua side waits for the request (bench-roundtrip.cpp).
enum class Wake {
  busy,      // poll() in a busy loop
  dispatch,  // dispatch() in a busy loop, yield when it ran nothing
  udp,       // socket.select on the dss helper's socket, one datagram per item
  fd,        // poll(2) on getfd(), then dispatch()
  wait,      // wait(), then dispatch()
};
// `count` round trips in all, shared by `producers` threads, each a blocking
// 1v0 deliver; latency measured around each deliver.
RtStats ours_roundtrip(long count, Wake w, int producers = 1);
// The round-trip ceiling: producers push a request to a mutex + deque and
// wait on the request's own condition variable; the consumer pcalls a Lua
// function per request and waits for requests as `CeilWake` says.
enum class CeilWake {
  spin,     // sched_yield when the queue is empty
  eventfd,  // asleep on an eventfd written on empty -> non-empty
  cv,       // asleep on a condition variable notified on empty -> non-empty
};
RtStats ceil_roundtrip(long count, CeilWake w, int producers = 1);
// Of round trips measured in turn, the one with the median rate.
RtStats med_rt(std::vector<RtStats> v);

// --- the ceilings (bench-ceilings.cpp) ------------------------------------------------

enum class CeilStyle {
  swap = 0,   // swap the queue out under one lock, pcall per item
  table = 1,  // the same, an args table per item
  pop1 = 2,   // one item per lock
  pop1_args = 6,  // 1.0 style: lock, pop one, build the args table, unlock, cb(unpack(args))
};
const char* style_name(CeilStyle s);
const std::vector<CeilStyle>& ceil_styles();  // in the order of the C rows
// Items/s with P producers running concurrently with the consumer;
// *writes_per_item: eventfd writes (wake-ups) per item.
double ceil_throughput(int producers, long total, CeilStyle style,
                       double* writes_per_item = nullptr);
// Drain rate of a queue prefilled with `depth` items; *fill_rate: pushes/s.
double ceil_drain_at_depth(long depth, double* fill_rate, CeilStyle style = CeilStyle::swap);

// --- what the scenarios hand on: later rows and the targets use it -------------------

// Keys of Results::tp besides the ceiling styles.
enum Kind { kPoll = 3, kDispatch = 4, kFd = 5 };

struct Fill {  // a "fill to depth" row
  std::string id;
  double ours, ceiling;  // deliveries/s, pushes/s
};

struct Blocking {  // a blocking round-trip row with P producers (B rows)
  std::string id;
  std::string what;
  RtStats ours, ceiling;
};

struct SessRows {  // the S rows the TS targets judge (bench-sessions.cpp)
  double s1 = -1, s1_ceil = -1, s2 = -1;  // messages/s
  RtStats s3, s3_ceil;                    // ping-pong
  double s4 = -1, s4_ceil1 = -1, s4_ceil2 = -1;  // spawned + joined/s, states/s
  double s5_rss = -1;                     // bytes per idle session
  double s6_peak = -1;                    // pool threads at most, 10 000 idle
};

struct Results {
  std::map<std::pair<int, int>, double> tp;  // {CeilStyle or Kind, producers} -> items/s
  std::map<int, double> ceil_writes, fd_notices, fd_polls;  // by producers
  double at(int kind, int producers) const;
  double ceil_at(int producers) const { return at(int(CeilStyle::swap), producers); }
  std::vector<Fill> fills;                // D3, D6, ...
  RtStats rt_ceil_sleep;                  // the eventfd round-trip ceiling
  std::map<std::string, RtStats> loops;   // E rows by loop ("luv", "cqueues", ...)
  double udp_bare = -1, udp_item = -1;    // U0, U1
  double bounded = -1, unbounded = -1;    // A4 and its unbounded twin
  std::vector<Blocking> blocking;         // B1-B8
  SessRows sess;                          // S1-S6
};

extern const int PRODUCERS[4];  // 1, 2, 4, 8

// --- the targets: a ratio of two figures of this run (bench-targets.cpp) ------------

struct Target {
  std::string what;
  double ours, reference;  // the ratio is ours / reference; < 0: not measured
  double target;
  bool at_most;  // the ratio must be ≤ target (else ≥)
  std::string notes;
  bool judged = true;  // false: the ratio is printed, met/missed left out
};
void targets_header(const char* title);
// Row `prefix` k: the ratio, the target, met or missed. Never asserted.
void target_row(const char* prefix, int k, const Target& t);

// --- the scenarios, in the order of the full suite ------------------------------------

void fire_and_forget(Results& res);  // bench-fire-forget.cpp: C, F, W
void ceiling_rows(const Results& res);  // bench-ceilings.cpp: C
void drain_at_depth(Results& res);   // bench-depth.cpp: D
void round_trips(Results& res);      // bench-roundtrip.cpp: R
void round_trips_np(Results& res);   // bench-roundtrips-np.cpp: B
void rt_one();
struct ConsumerUsage {
  double user_us = 0, sys_us = 0, vcs = 0, ivcs = 0;
};
extern ConsumerUsage g_consumer;                       // --rt-one P STYLE
void loop_rows(Results& res);        // bench-loops.cpp: E (also --loops)
void udp_rows(Results& res);         // bench-udp.cpp: U
void api_rows(Results& res);         // bench-api.cpp: A
void memory_rows();                  // bench-memory.cpp: M
void session_rows(Results& res);     // bench-sessions.cpp: S (also --sessions)
void luv_rows(const Results& res);   // bench-luv.cpp: L
void target_rows(const Results& res);  // bench-targets.cpp: T (issue 18)
void targets_17(const Results& res);   // bench-roundtrips-np.cpp: TB (issue 17)
void targets_15(const Results& res);   // bench-sessions.cpp: TS (issue 15)
void quick();                        // bench-summary.cpp: --quick
void poll_probe(int p);              // bench-summary.cpp: --poll P

}  // namespace bench
