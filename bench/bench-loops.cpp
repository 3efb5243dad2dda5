// bench-loops.cpp -- event loops (issue 6): deliver -> callback running in
// the loop, with the helpers of lua/darksidesync/ (luv, cqueues, Copas,
// socket.select, no loop: wait()), one item every 200 µs so that the loop is
// asleep when each arrives, against the bare queue asleep on its eventfd.
// E rows (also dss_bench --loops); writes loops.dat.
#include <algorithm>
#include <thread>

#include "runner.h"

namespace bench {

namespace {

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
  -- Each loop calls ready() once set up, just before it first sleeps: the
  -- producer starts then, so that loading the library (cqueues' require
  -- alone takes 5-20 ms) and making the loop are not charged to the first
  -- items.
  local ready = bench_loop_ready
  loops = {}
  function loops.luv(n)
    if not has "luv" then return false end
    local uv = require "luv"
    local w = require("darksidesync.luv").start()
    reset(n, function() w:close() end)
    ready()
    uv.run()
    return true
  end
  function loops.cqueues(n)
    if not has "cqueues" then return false end
    local cq = require("cqueues").new()
    local r = require("darksidesync.cqueues").attach(cq)
    reset(n, function() r:stop() end)
    ready()
    assert(cq:loop())
    return true
  end
  function loops.copas(n)
    if not has "copas" then return false end
    local copas = require "copas"
    local r = require("darksidesync.copas").addreader()
    local finished = false
    reset(n, function() finished = true end)
    ready()
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
    ready()
    while not finished do
      local rd = socket.select(set, nil, 1)
      if rd[r] then r:dispatch() end
    end
    return true
  end
  function loops.wait(n)
    local finished = false
    reset(n, function() finished = true end)
    ready()
    while not finished do
      if darksidesync.wait(1) > 0 then darksidesync.dispatch(1000) end
    end
    return true
  end
  function loops.ceiling(n)  -- the C consumer calls lat_cb itself
    reset(n, function() end)
    ready()
    return true
  end
)";

const int GAP_US = 200;
int g_latref = LUA_NOREF;
std::atomic<bool> g_loop_ready{false};

// bench_loop_ready(): the loop is set up; the paced producer may start.
int l_loop_ready(lua_State*) {
  g_loop_ready.store(true, std::memory_order_release);
  return 0;
}

void add_ready(lua_State* L) {
  g_loop_ready.store(false, std::memory_order_relaxed);
  lua_pushcfunction(L, l_loop_ready);
  lua_setglobal(L, "bench_loop_ready");
}

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
    while (!g_loop_ready.load(std::memory_order_acquire))
      std::this_thread::sleep_for(std::chrono::microseconds(50));
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
  add_ready(L);
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
  g_loop_ready.store(true, std::memory_order_release);  // not installed: never called
  prod.join();
  std::vector<double> v;
  if (ran) v = lat_values(L);  // else not installed: what was queued is dropped
  lua_close(L);
  return v;
}

// The ceiling: the bare queue, the consumer asleep on its eventfd, then
// lua_pcall of the same Lua callback per item.
std::vector<double> ceil_latency(long n, int gap_us) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  add_ready(L);
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

const struct {
  const char* loop;
  const char* what;
} LOOPS[] = {{"luv", "luv: darksidesync.luv watcher (uv_poll on getfd()), uv.run()"},
             {"cqueues", "cqueues: darksidesync.cqueues attach(cq), cq:loop()"},
             {"copas", "Copas: darksidesync.copas addreader(), copas.step()"},
             {"select", "socket.select on darksidesync.select, then dispatch()"},
             {"wait", "no loop: wait(), then dispatch()"}};

// Profiling knobs (issue 18, T9): DSS_BENCH_LOOPS="luv,cqueues" runs only
// those loops; DSS_BENCH_LOOP_DUMP=dir writes each loop's latencies, in
// arrival order, to dir/<loop>.lat (to see when the tail happens).
bool loop_selected(const char* loop) {
  const char* sel = std::getenv("DSS_BENCH_LOOPS");
  if (!sel || !*sel) return true;
  std::string s = std::string(",") + sel + ",";
  return s.find(std::string(",") + loop + ",") != std::string::npos;
}

void dump_latencies(const char* loop, const std::vector<double>& v) {
  const char* dir = std::getenv("DSS_BENCH_LOOP_DUMP");
  if (!dir || !*dir) return;
  FILE* f = std::fopen((std::string(dir) + "/" + loop + ".lat").c_str(), "w");
  if (!f) return;
  for (double x : v) std::fprintf(f, "%.2f\n", x);
  std::fclose(f);
}

}  // namespace

// The medians, per percentile, of a loop's repetitions.
RtStats median_stats(const std::vector<RtStats>& v) {
  std::vector<double> a, b, c;
  for (const RtStats& r : v) {
    a.push_back(r.p50);
    b.push_back(r.p99);
    c.push_back(r.p999);
  }
  RtStats m;
  m.p50 = median(a);
  m.p99 = median(b);
  m.p999 = median(c);
  return m;
}

void loop_rows(Results& res) {
  header("### Event loops: deliver → callback running in the loop (1 producer, one item "
         "every 200 µs, the loop asleep; lua/darksidesync/ helpers)");
  long n_lat = scaled(3000);
  // Up to 3 repetitions, the ceiling and every loop in turn in each, so a
  // stall of the machine (tens of ms on a shared 2-CPU box, which alone
  // makes a p99 of 3000 items) hits one repetition of one loop, not the row.
  int reps = std::max(1, std::min(opt.reps, 3));
  const std::size_t nl = sizeof LOOPS / sizeof LOOPS[0];
  std::vector<RtStats> cs;
  std::vector<std::vector<RtStats>> ls(nl);
  std::vector<long> ran(nl, n_lat);
  std::vector<bool> installed(nl, true);
  for (int r = 0; r < reps; ++r) {
    std::vector<double> c = ceil_latency(n_lat, GAP_US);
    cs.push_back(percentiles(c, 1));
    for (std::size_t i = 0; i < nl; ++i) {
      if (!loop_selected(LOOPS[i].loop) || !installed[i]) continue;
      std::vector<double> v = loop_latency(LOOPS[i].loop, n_lat, GAP_US);
      dump_latencies(LOOPS[i].loop, v);
      if (v.empty()) {
        installed[i] = false;
        continue;
      }
      ran[i] = std::min(ran[i], long(v.size()));
      ls[i].push_back(percentiles(v, 1));
    }
  }
  RtStats ec = median_stats(cs);
  FILE* f = dat("loops.dat");
  if (f) {
    std::fprintf(f, "# loop p50 p99 p99.9 (µs)\n");
    std::fprintf(f, "\"ceiling eventfd\" %.2f %.2f %.2f\n", ec.p50, ec.p99, ec.p999);
  }
  row("E0", "ceiling: bare queue, asleep on its eventfd, lua_pcall per item: p50 / p99 / p99.9",
      p50_p99_p999(ec), "1.00× (p50)", "", "");
  for (std::size_t i = 0; i < nl; ++i) {
    if (!loop_selected(LOOPS[i].loop)) continue;
    std::string id = "E" + std::to_string(i + 1),
                what = std::string(LOOPS[i].what) + ": p50 / p99 / p99.9";
    if (!installed[i]) {
      row(id, what, "not installed", "", "", "");
      continue;
    }
    RtStats r = median_stats(ls[i]);
    res.loops[LOOPS[i].loop] = r;
    if (f) std::fprintf(f, "\"%s\" %.2f %.2f %.2f\n", LOOPS[i].loop, r.p50, r.p99, r.p999);
    row(id, what, p50_p99_p999(r), fmt_ratio(r.p50, ec.p50) + " (p50)", "",
        "p99 vs ceiling " + fmt_ratio(r.p99, ec.p99) +
            fmt("; items %.0f", double(n_lat)) + "; medians of " + std::to_string(reps));
    must(ran[i] == n_lat, id + ": the loop ran " + fmt("%.0f", double(ran[i])) + " items of " +
                              std::to_string(n_lat));
  }
  if (f) std::fclose(f);
}

}  // namespace bench
