// bench-roundtrip.cpp -- blocking round trips (1 producer; latency measured
// around deliver): ours with the Lua side busy or asleep (UDP notice, getfd(),
// wait()) against a ceiling whose producer pushes a request and waits on a
// condition variable while the consumer (spinning, or asleep on its eventfd)
// pcalls a Lua function with it. R rows; writes latency.dat.
#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <thread>

#include "runner.h"

namespace bench {

namespace {

// --- the ceiling ----------------------------------------------------------------------

struct RtReq {
  long x;
  long answer = 0;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
};

struct CeilRt {
  std::mutex mu;
  std::deque<RtReq*> q;
  int efd = eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> stop{false};
  bool sleeping;
  explicit CeilRt(bool s) : sleeping(s) {}
  ~CeilRt() { close(efd); }
  void wake() {
    std::uint64_t one = 1;
    if (write(efd, &one, 8) != 8) std::abort();
  }
  // The producer: `count` requests, one at a time; latencies in µs.
  double produce(long count, std::vector<double>& lat);
  // The consumer, on the Lua state's thread, until the producer stops.
  void serve(lua_State* L, int fref);
};

double CeilRt::produce(long count, std::vector<double>& lat) {
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
    if (sleeping && was_empty) wake();
    {
      std::unique_lock<std::mutex> lock(r.mu);
      r.cv.wait(lock, [&] { return r.done; });
    }
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
    if (r.answer != i + 1) std::abort();
  }
  double seconds = secs_since(t0);
  stop.store(true);
  wake();
  return seconds;
}

void CeilRt::serve(lua_State* L, int fref) {
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
}

RtStats ceil_roundtrip(long count, bool sleeping) {
  lua_State* L = new_state();
  run(L, "function rt(x) return x + 1 end");
  int fref = ref_global(L, "rt");
  CeilRt c(sleeping);
  std::vector<double> lat;
  lat.reserve(size_t(count));
  double seconds = 0;
  std::thread prod([&] { seconds = c.produce(count, lat); });
  c.serve(L, fref);
  prod.join();
  lua_close(L);
  return percentiles(lat, seconds);
}

// --- ours ---------------------------------------------------------------------------------

// The round-trip servers, until the producer is done (it then delivers one
// more item, so that a sleeping loop wakes up to see it).
const char* const RT_LUA = R"(
  local dss_ = darksidesync
  local poll, dispatch = dss_.poll, dss_.dispatch
  local yield, stopped, pollfd = bench_yield, bench_stopped, bench_pollfd
  function rt(wt, x) wt(x + 1) end
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
)";

int g_rtref = LUA_NOREF;

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

// The producer of ours: `count` round trips once `ready`; latencies in µs.
double ours_produce(void* utilid, long count, std::atomic<bool>& ready,
                    std::vector<double>& lat) {
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
  double seconds = secs_since(t0);
  g_stop.store(true);
  deliver_ff(utilid, 0);  // wakes a sleeping loop up to see the stop
  return seconds;
}

const char* serve_fn(Wake w) {
  switch (w) {
    case Wake::busy: return "serve_busy";
    case Wake::udp: return "serve_sleeping";
    case Wake::fd: return "serve_fd";
    case Wake::wait: return "serve_wait";
  }
  return "";
}

}  // namespace

RtStats ours_roundtrip(long count, Wake w) {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, RT_LUA);
  g_rtref = ref_global(L, "rt");
  g_stop.store(false);
  std::vector<double> lat;
  lat.reserve(size_t(count));
  double seconds = 0;
  std::atomic<bool> ready{false};
  std::thread prod([&] { seconds = ours_produce(utilid, count, ready, lat); });
  // Set up what the loop sleeps on before the first request: the helper's
  // socket (it calls setport) or the fd.
  if (w == Wake::udp) run(L, "require('dss').getsocket()");
  if (w == Wake::fd) run(L, "darksidesync.getfd()");
  ready.store(true);
  call(L, serve_fn(w), {});
  prod.join();
  lua_close(L);
  return percentiles(lat, seconds);
}

namespace {

// The run with the median rate, of round trips measured in turn.
RtStats med_rt(std::vector<RtStats> v) {
  std::sort(v.begin(), v.end(), [](const RtStats& a, const RtStats& b) { return a.rate < b.rate; });
  return v[v.size() / 2];
}

void rt_rows(const char* id, const char* what, RtStats o, RtStats c) {
  double lr = luv_get("rt_rate");
  row(std::string(id) + "a", std::string(what) + ": round trips/s", fmt_rate(o.rate),
      fmt_ratio(o.rate, c.rate), fmt_ratio(o.rate, lr), "ceiling " + fmt_rate(c.rate));
  row(std::string(id) + "b", std::string(what) + ": p50 / p99 / p99.9", p50_p99_p999(o),
      fmt_ratio(o.p50, c.p50) + " (p50)", fmt_ratio(o.p50, luv_get("rt_p50")) + " (p50)",
      "ceiling " + p50_p99_p999(c));
}

void write_dat(const RtStats& cb, const RtStats& ob, const RtStats& cs, const RtStats& of,
               const RtStats& ow, const RtStats& os) {
  FILE* f = dat("latency.dat");
  if (!f) return;
  std::fprintf(f, "# mode p50 p99 p99.9 (µs)\n");
  auto line = [&](const char* name, double a, double b, double c) {
    std::fprintf(f, "\"%s\" %.2f %.2f %.2f\n", name, a, b, c);
  };
  line("ceiling busy", cb.p50, cb.p99, cb.p999);
  line("ours busy poll()", ob.p50, ob.p99, ob.p999);
  line("ceiling eventfd", cs.p50, cs.p99, cs.p999);
  line("ours getfd+poll(2)", of.p50, of.p99, of.p999);
  line("ours wait()", ow.p50, ow.p99, ow.p999);
  line("ours UDP+select", os.p50, os.p99, os.p999);
  if (luv_get("rt_p50") > 0)
    line("luv async+pipe", luv_get("rt_p50"), luv_get("rt_p99"), luv_get("rt_p999"));
  std::fclose(f);
}

}  // namespace

void round_trips(Results& res) {
  header("### Blocking round trips (1 producer; latency measured around deliver)");
  long n_busy = scaled(40000), n_sleep = scaled(10000);
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
  RtStats cb = med_rt(vcb), ob = med_rt(vob), cs = med_rt(vcs), os = med_rt(vos);
  RtStats of = med_rt(vof), ow = med_rt(vow);
  rt_rows("R1", "busy Lua loop (poll, yield when empty)", ob, cb);
  rt_rows("R2", "sleeping Lua loop (UDP notice + socket.select + dss helper)", os, cs);
  rt_rows("R3", "sleeping Lua loop (poll(2) on getfd(), then dispatch())", of, cs);
  rt_rows("R4", "sleeping Lua loop (wait(), then dispatch())", ow, cs);
  write_dat(cb, ob, cs, of, ow, os);
  res.rt_ceil_sleep = cs;
}

}  // namespace bench
