// bench-sessions.cpp -- sessions and channels (issue 15): messages between
// two sessions, a round trip across sessions, spawning, and what an idle
// session costs, each against a ceiling measured in the same run. S rows;
// at the end of the suite, the "Targets (issue 15)" block (TS rows).
//
// Ours: a main state made by new_state() (package paths at ours) requires
// darksidesync.session and darksidesync.channel and spawns sessions on its
// pool; inside a session the function is a fiber, so ch:put / ch:get
// suspend the fiber and, when nothing else can run, park the session (it
// holds no thread until a completion wakes it). Timestamps inside sessions
// come from darksidesync.monotime(). The pool is {min = 2, max = 2} for
// S1-S5 (two threads, as the ceilings), {min = 1, max = 2} for S6.
//
// The ceilings are bare C++ on two threads: a bounded std::deque<long> under
// a mutex with two condition variables (S1, S2), one mutex + condition
// variable + deque per direction (S3), and luaL_newstate + luaL_openlibs +
// lua_close (S4). Rates of S1-S3 are measured the same way on both sides:
// from the consumer's first get (pop) to its last (S1, S2), over K round
// trips after 100 unmeasured ones (S3).
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <condition_variable>
#include <thread>

#include "runner.h"

namespace bench {

namespace {

const long kCapacity = 64;  // S1, S2: the channel's (and the ceiling's) bound

// Like scaled(), with a smaller floor: the memory rows spawn sessions, and a
// smoke run (--scale 0.05) must stay quick.
long sized(long n, long floor) { return std::max(floor, long(double(n) * opt.scale)); }

// --- the Lua side ---------------------------------------------------------------

const char* const SESS_LUA = R"(
  session = require "darksidesync.session"
  channel = require "darksidesync.channel"
  local monotime = require("darksidesync").monotime

  local pack = table.pack or function(...) return { n = select("#", ...), ... } end
  local function joined(s)
    local r = pack(s:join())
    if r[1] == nil then error("session failed: " .. tostring(r[2]), 2) end
    return (table.unpack or unpack)(r, 1, r.n)
  end

  function s_pool(min, max)
    local p = session.pool({ min = min, max = max })
    return p.threads, p.peak
  end

  -- S1/S2: one session puts n values, another gets them; the rate is
  -- measured in the getter, from its first get to its last. With `tables`,
  -- each value is one prebuilt 10-field table (every put copies it).
  function s_stream(n, cap, tables)
    local ch = channel.new(cap)
    local t0 = monotime()
    local prod = session.spawn(function(ch, n, tables)
      if tables then
        local t = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9, j = 10 }
        for _ = 1, n do ch:put(t) end
      else
        for i = 1, n do ch:put(i) end
      end
      return require("darksidesync").stats().delivered
    end, ch, n, tables)
    local cons = session.spawn(function(ch, n, tables)
      local now = require("darksidesync").monotime
      local v = ch:get()
      local t0 = now()
      for _ = 2, n do v = ch:get() end
      local el = now() - t0
      if tables then assert(v.j == 10) else assert(v == n) end
      return (n - 1) / el, require("darksidesync").stats().delivered
    end, ch, n, tables)
    local rate, cwakes = joined(cons)
    local pwakes = joined(prod)
    return rate, n / (monotime() - t0), pwakes / n, cwakes / n
  end

  -- S3: a ping-pong between two sessions over two capacity-1 channels;
  -- latencies measured in the pinging session around put + get.
  function s_pingpong(k)
    local a2b, b2a = channel.new(1), channel.new(1)
    local b = session.spawn(function(inc, out)
      local v = inc:get()
      while v do
        out:put(v)
        v = inc:get()
      end
      return true
    end, a2b, b2a)
    local a = session.spawn(function(out, inc, k)
      local now = require("darksidesync").monotime
      for i = 1, 100 do out:put(i); inc:get() end
      local lat = {}
      local t0 = now()
      for i = 1, k do
        local t = now()
        out:put(i)
        assert(inc:get() == i)
        lat[i] = now() - t
      end
      local el = now() - t0
      out:close()
      table.sort(lat)
      local function at(p) return lat[math.floor(p * (k - 1)) + 1] * 1e6 end
      local wakes = require("darksidesync").stats().delivered / (k + 100)
      return k / el, at(0.5), at(0.99), at(0.999), wakes
    end, a2b, b2a, k)
    local rate, p50, p99, p999, wakes = joined(a)
    joined(b)
    return rate, p50, p99, p999, wakes
  end

  -- S4: m sessions spawned, each returning its argument, then all joined.
  function s_spawn(m)
    local s = {}
    local t0 = monotime()
    for i = 1, m do s[i] = session.spawn(function(x) return x end, i) end
    for i = 1, m do assert(joined(s[i]) == i) end
    local el = monotime() - t0
    local p = session.pool()
    return m / el, p.peak
  end

  -- S5/S6: m sessions parked on a get of one rendezvous channel.
  function s_park(m)
    idle_ch = channel.new(0)
    idle = {}
    for i = 1, m do
      idle[i] = session.spawn(function(ch)
        ch:get()
        -- Its Lua heap as it was idle (the get done, op.lua loaded).
        collectgarbage()
        collectgarbage()
        return collectgarbage("count")
      end, idle_ch)
    end
  end

  -- Whether the m sessions are all parked: none running, none queued.
  function s_parked(m)
    local p = session.pool()
    return p.busy == 0 and p.queued == 0 and p.sessions == m
  end

  function s_pool_peak() return session.pool().peak end

  -- Closes the channel (every get returns nil, "closed"), joins them all;
  -- returns the median Lua heap (KiB) they reported.
  function s_release()
    idle_ch:close()
    local k = {}
    for i = 1, #idle do k[i] = joined(idle[i]) end
    idle, idle_ch = nil, nil
    table.sort(k)
    collectgarbage()
    return k[math.floor(#k / 2) + 1]
  end

  -- Lua heap (KiB) of a session right after its boot (nothing run but the
  -- boot: darksidesync, session, fibers, channel loaded).
  function s_boot_heap()
    return joined(session.spawn(function()
      collectgarbage()
      collectgarbage()
      return collectgarbage("count")
    end))
  end

  function s_close() session.close() end
)";

// Calls global `name` with number arguments; returns `nres` results.
std::vector<double> calln(lua_State* L, const char* name, std::initializer_list<double> args,
                          int nres) {
  lua_getglobal(L, name);
  for (double a : args) lua_pushnumber(L, a);
  if (lua_pcall(L, int(args.size()), nres, 0)) {
    std::fprintf(stderr, "bench: Lua error in %s: %s\n", name, lua_tostring(L, -1));
    std::exit(2);
  }
  std::vector<double> r;
  for (int i = nres; i >= 1; --i) r.push_back(lua_tonumber(L, -i));
  lua_pop(L, nres);
  return r;
}

bool call_bool(lua_State* L, const char* name, double arg) {
  lua_getglobal(L, name);
  lua_pushnumber(L, arg);
  if (lua_pcall(L, 1, 1, 0)) {
    std::fprintf(stderr, "bench: Lua error in %s: %s\n", name, lua_tostring(L, -1));
    std::exit(2);
  }
  bool b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

lua_State* sess_state(int min, int max) {
  lua_State* L = new_state();
  run(L, SESS_LUA);
  calln(L, "s_pool", {double(min), double(max)}, 2);
  return L;
}

// --- memory -----------------------------------------------------------------------

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

long process_threads() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long n = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "Threads: %ld", &n) == 1) break;
  std::fclose(f);
  return n;
}

// --- the ceilings -------------------------------------------------------------------

// A bounded queue of longs: a mutex, two condition variables, a deque.
struct BoundedQ {
  std::mutex mu;
  std::condition_variable not_empty, not_full;
  std::deque<long> q;
  long cap;
  explicit BoundedQ(long c) : cap(c) {}
  void put(long x) {
    {
      std::unique_lock<std::mutex> lock(mu);
      not_full.wait(lock, [&] { return long(q.size()) < cap; });
      q.push_back(x);
    }
    not_empty.notify_one();
  }
  long get() {
    long x;
    {
      std::unique_lock<std::mutex> lock(mu);
      not_empty.wait(lock, [&] { return !q.empty(); });
      x = q.front();
      q.pop_front();
    }
    not_full.notify_one();
    return x;
  }
};

// S1's ceiling: items/s, from the consumer's first get to its last.
double ceil_stream(long n) {
  BoundedQ q(kCapacity);
  std::thread prod([&] {
    for (long i = 1; i <= n; ++i) q.put(i);
  });
  long v = q.get();
  auto t0 = Clock::now();
  for (long i = 2; i <= n; ++i) v = q.get();
  double s = secs_since(t0);
  prod.join();
  if (v != n) std::abort();
  return double(n - 1) / s;
}

// S3's ceiling: one mutex + condition variable + deque per direction.
RtStats ceil_pingpong(long k) {
  BoundedQ a2b(1), b2a(1);
  std::thread b([&] {
    for (long v = a2b.get(); v >= 0; v = a2b.get()) b2a.put(v);
  });
  for (long i = 1; i <= 100; ++i) {
    a2b.put(i);
    b2a.get();
  }
  std::vector<double> lat;
  lat.reserve(size_t(k));
  auto t0 = Clock::now();
  for (long i = 1; i <= k; ++i) {
    auto t = Clock::now();
    a2b.put(i);
    if (b2a.get() != i) std::abort();
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  double s = secs_since(t0);
  a2b.put(-1);
  b.join();
  return percentiles(lat, s);
}

// S4's ceiling: fresh states made, opened and closed, on `threads` threads.
double ceil_states(long m, int threads) {
  auto t0 = Clock::now();
  std::vector<std::thread> ths;
  for (int t = 0; t < threads; ++t)
    ths.emplace_back([&, t] {
      for (long i = t; i < m; i += threads) {
        lua_State* L = luaL_newstate();
        luaL_openlibs(L);
        lua_close(L);
      }
    });
  for (auto& t : ths) t.join();
  return double(m) / secs_since(t0);
}

// The Lua heap of a fresh state with the standard libraries (KiB).
double fresh_state_kib() {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_gc(L, LUA_GCCOLLECT, 0);
  double k = lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0;
  lua_close(L);
  return k;
}

// --- ours ---------------------------------------------------------------------------

// Waits until the m sessions are parked; false after 120 s.
bool wait_parked(lua_State* L, long m) {
  auto t0 = Clock::now();
  while (!call_bool(L, "s_parked", double(m))) {
    if (secs_since(t0) > 120) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  return true;
}

struct Idle {
  double rss_per = 0, heap_per = 0;  // bytes per parked session
  double lua_kib = 0;                // one session's Lua heap, idle
  double spawn_s = 0, close_s = 0;   // spawn -> all parked; close -> all joined
  double rss_total = 0;              // the process's, all parked
  double peak = 0, threads = 0;      // the pool's peak; the process's threads
  double faults_per = 0;             // minor page faults per session, spawn -> parked
};

// m sessions parked on one channel: what they cost, then released.
Idle idle_sessions(long m, int min, int max) {
  Idle r;
  lua_State* L = sess_state(min, max);
  // The pool's threads (and their malloc arenas) exist before the baseline.
  calln(L, "s_spawn", {double(max)}, 2);
  lua_gc(L, LUA_GCCOLLECT, 0);
  malloc_trim(0);
  long r0 = rss_bytes(), h0 = heap_bytes(), f0 = minor_faults();
  auto t0 = Clock::now();
  calln(L, "s_park", {double(m)}, 0);
  if (!wait_parked(L, m)) {
    std::fprintf(stderr, "bench: %ld sessions did not park within 120 s\n", m);
    std::exit(2);
  }
  r.spawn_s = secs_since(t0);
  r.faults_per = double(minor_faults() - f0) / double(m);
  long r1 = rss_bytes(), h1 = heap_bytes();
  r.rss_per = double(r1 - r0) / double(m);
  r.heap_per = double(h1 - h0) / double(m);
  r.rss_total = double(r1);
  r.threads = double(process_threads());
  r.peak = calln(L, "s_pool_peak", {}, 1)[0];
  t0 = Clock::now();
  r.lua_kib = calln(L, "s_release", {}, 1)[0];
  r.close_s = secs_since(t0);
  run(L, "s_close()");
  lua_close(L);
  return r;
}

std::string kib(double bytes) { return fmt("%.1f KiB", bytes / 1024.0); }

}  // namespace

// --- the rows -------------------------------------------------------------------------

void session_rows(Results& res) {
  SessRows& o = res.sess;
  header(("### Sessions and channels (issue 15; pool {min = 2, max = 2} but S6; ceilings: bare "
          "C++ threads, mutex + condition variables; " + opt.label + ")").c_str());
  lua_State* L = sess_state(2, 2);
  calln(L, "s_spawn", {4}, 2);  // the pool's threads, modules in the OS cache

  // S1, S2: streams; interleaved with the ceiling.
  long n = scaled(100000), nt = scaled(50000);
  std::vector<double> c1, o1, o1w, o2, o2w, pw1, cw1, pw2, cw2;
  for (int r = 0; r < opt.reps; ++r) {
    c1.push_back(ceil_stream(n));
    auto a = calln(L, "s_stream", {double(n), double(kCapacity), 0}, 4);
    o1.push_back(a[0]);
    o1w.push_back(a[1]);
    pw1.push_back(a[2]);
    cw1.push_back(a[3]);
    auto b = calln(L, "s_stream", {double(nt), double(kCapacity), 1}, 4);
    o2.push_back(b[0]);
    o2w.push_back(b[1]);
    pw2.push_back(b[2]);
    cw2.push_back(b[3]);
  }
  // Completions that reached a session through its hub, per message: each
  // is an op that had blocked (and, when the session had parked, a wake-up
  // through the pool).
  auto wakes = [](const std::vector<double>& p, const std::vector<double>& c) {
    return "; blocked ops completed per message: putter " + fmt("%.3f", median(p)) +
           ", getter " + fmt("%.3f", median(c));
  };
  o.s1 = median(o1);
  o.s1_ceil = median(c1);
  o.s2 = median(o2);
  std::string cap = "capacity " + std::to_string(kCapacity);
  row("S0", "ceiling: bounded deque<long>, mutex + 2 condition variables, 2 threads (" + cap + ")",
      fmt_rate(o.s1_ceil), "", "", std::to_string(n) + " items; timed in the consumer");
  row("S1", "numbers between two sessions, channel " + cap, fmt_rate(o.s1),
      fmt_ratio(o.s1, o.s1_ceil), "",
      std::to_string(n) + " items, timed in the getter from first get to last; spawn → "
      "joined: " + fmt_rate(median(o1w)) + wakes(pw1, cw1));
  row("S2", "10-field tables between two sessions (one table put again and again: each put "
      "copies it), " + cap, fmt_rate(o.s2), fmt_ratio(o.s2, o.s1_ceil), "",
      "vs numbers (S1) " + fmt_ratio(o.s2, o.s1) + "; " + std::to_string(nt) +
          " items; spawn → joined: " + fmt_rate(median(o2w)) + wakes(pw2, cw2));

  // S3: ping-pong.
  long k = sized(10000, 300);
  std::vector<RtStats> vc, vo;
  std::vector<double> w3;
  for (int r = 0; r < opt.reps; ++r) {
    vc.push_back(ceil_pingpong(k));
    auto a = calln(L, "s_pingpong", {double(k)}, 5);
    w3.push_back(a[4]);
    RtStats s;
    s.rate = a[0];
    s.p50 = a[1];
    s.p99 = a[2];
    s.p999 = a[3];
    vo.push_back(s);
  }
  o.s3 = med_rt(vo);
  o.s3_ceil = med_rt(vc);
  row("S3a", "ping-pong between two sessions, two capacity-1 channels: round trips/s",
      fmt_rate(o.s3.rate), fmt_ratio(o.s3.rate, o.s3_ceil.rate), "",
      "ceiling (mutex + condition variable per direction) " + fmt_rate(o.s3_ceil.rate) + "; " +
          std::to_string(k) + " round trips; blocked ops completed per round trip in the "
          "pinging session " + fmt("%.2f", median(w3)));
  row("S3b", "ping-pong: p50 / p99 / p99.9", p50_p99_p999(o.s3),
      fmt_ratio(o.s3.p50, o.s3_ceil.p50) + " (p50), " + fmt_ratio(o.s3.p99, o.s3_ceil.p99) +
          " (p99)", "", "ceiling " + p50_p99_p999(o.s3_ceil));

  // S4: spawn + join.
  long m = sized(400, 40);
  std::vector<double> c41, c42, o4, pk;
  for (int r = 0; r < opt.reps; ++r) {
    // The ceiling makes ten times as many states: at ~30 µs a state, one
    // preemption of the shared machine would otherwise decide its rate.
    c41.push_back(ceil_states(m * 10, 1));
    c42.push_back(ceil_states(m * 10, 2));
    auto a = calln(L, "s_spawn", {double(m)}, 2);
    o4.push_back(a[0]);
    pk.push_back(a[1]);
  }
  o.s4 = median(o4);
  o.s4_ceil1 = median(c41);
  o.s4_ceil2 = median(c42);
  row("S4", "sessions spawned (a function returning its argument) and joined", fmt_rate(o.s4),
      fmt_ratio(o.s4, o.s4_ceil1), "",
      std::to_string(m) + " at a time; pool peak " + fmt("%.0f", median(pk)) +
          " threads; vs 2-thread ceiling " + fmt_ratio(o.s4, o.s4_ceil2));
  row("S4c", "ceiling: luaL_newstate + luaL_openlibs + lua_close, 1 thread / 2 threads",
      fmt_rate(o.s4_ceil1) + " / " + fmt_rate(o.s4_ceil2), "", "", "");
  run(L, "s_close()");
  lua_close(L);

  // S5: memory per idle session.
  long mi = sized(1000, 50);
  std::vector<double> rss, heap, lk, sp, cl;
  for (int r = 0; r < opt.reps; ++r) {
    Idle i = idle_sessions(mi, 2, 2);
    rss.push_back(i.rss_per);
    heap.push_back(i.heap_per);
    lk.push_back(i.lua_kib);
    sp.push_back(i.spawn_s);
    cl.push_back(i.close_s);
  }
  lua_State* B = sess_state(2, 2);
  double boot = calln(B, "s_boot_heap", {}, 1)[0];
  run(B, "s_close()");
  lua_close(B);
  double fresh = fresh_state_kib();
  o.s5_rss = median(rss);
  double lua_b = median(lk) * 1024;
  row("S5a", "memory per idle session (parked on a channel get): RSS delta", kib(o.s5_rss), "",
      "", std::to_string(mi) + " sessions; spawn → all parked " +
              fmt("%.0f ms", median(sp) * 1e3) + ", release (close the channel, join all) " +
              fmt("%.0f ms", median(cl) * 1e3));
  row("S5b", "per idle session: malloc'd (mallinfo2, every arena) / its Lua heap / the rest",
      kib(median(heap)) + " / " + kib(lua_b) + " / " + kib(median(heap) - lua_b), "", "",
      "Lua heap after a full collect, once its get returned");
  row("S5c", "Lua heap: fresh state + openlibs / a session after boot / after one channel op",
      fmt("%.1f KiB", fresh) + " / " + fmt("%.1f KiB", boot) + " / " + fmt("%.1f KiB", lua_b / 1024),
      "", "", "boot: darksidesync, .session, fibers, .channel loaded; a channel op loads op.lua");

  // S6: 10 000 idle sessions on a 2-thread pool; one repetition.
  long m6 = sized(10000, 500);
  Idle i = idle_sessions(m6, 1, 2);
  o.s6_peak = i.peak;
  row("S6a", std::to_string(m6) + " idle sessions, pool {min = 1, max = 2}: pool threads at "
      "most / process threads", fmt("%.0f", i.peak) + " / " + fmt("%.0f", i.threads), "", "",
      "process: main + pool (the reactor starts with the first timer or fd a session waits on); one repetition");
  row("S6b", std::to_string(m6) + " idle sessions: RSS of the process / per session",
      fmt("%.0f MiB", i.rss_total / 1048576.0) + " / " + kib(i.rss_per), "", "",
      "malloc'd per session " + kib(i.heap_per));
  row("S6c", std::to_string(m6) + " idle sessions: spawn → all parked / release → all joined",
      fmt("%.2f s", i.spawn_s) + " / " + fmt("%.2f s", i.close_s), "", "",
      fmt_rate(double(m6) / i.spawn_s) + " spawned, " + fmt_rate(double(m6) / i.close_s) +
          " released; " + fmt("%.0f", i.faults_per) + " minor page faults per session");
}

void targets_15(const Results& res) {
  const SessRows& o = res.sess;
  targets_header("### Targets (issue 15): sessions and channels vs their ceilings (S rows above)");
  int k = 1;
  target_row("TS", k++, {"numbers/s between sessions vs the bare bounded queue (S1 vs S0)", o.s1,
                         o.s1_ceil, 0.3, false,
                         "ours " + fmt_rate(o.s1) + ", ceiling " + fmt_rate(o.s1_ceil)});
  Target t2{"10-field tables/s vs the bare bounded queue (S2 vs S0)", o.s2, o.s1_ceil, 0.3, false,
            "no target: shown"};
  t2.judged = false;
  target_row("TS", k++, t2);
  target_row("TS", k++, {"round trip p50 vs the bare condition-variable round trip (S3b)",
                         o.s3.p50, o.s3_ceil.p50, 2.0, true,
                         "ours " + fmt("%.1f µs", o.s3.p50) + ", ceiling " +
                             fmt("%.1f µs", o.s3_ceil.p50)});
  target_row("TS", k++, {"sessions spawned + joined/s vs bare state creation, 1 thread (S4)",
                         o.s4, o.s4_ceil1, 0.5, false,
                         "ours " + fmt_rate(o.s4) + ", ceiling " + fmt_rate(o.s4_ceil1)});
  Target t5{"memory per idle session vs 64 KiB (S5a)", o.s5_rss, 64 * 1024.0, 1.0, true,
            kib(o.s5_rss)};
  t5.judged = LUA_VERSION_NUM == 504;
  if (!t5.judged) t5.notes += "; a Lua 5.4 target, this binary: " + opt.label;
  target_row("TS", k++, t5);
  target_row("TS", k++, {"pool threads used by the idle sessions vs the pool's max (S6a)",
                         o.s6_peak, 2, 1.0, true, ""});
}

}  // namespace bench
