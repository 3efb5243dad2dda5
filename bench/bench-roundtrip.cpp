// bench-roundtrip.cpp -- blocking round trips (1 producer; latency measured
// around deliver): ours with the Lua side busy or asleep (UDP notice, getfd(),
// wait()) against a ceiling whose producer pushes a request and waits on a
// condition variable while the consumer (spinning, or asleep on its eventfd)
// pcalls a Lua function with it. R rows; writes latency.dat. Both sides run
// P producers too (ceil_roundtrip, ours_roundtrip: bench-roundtrips-np.cpp).
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <condition_variable>
#include <thread>

#include "runner.h"

namespace bench {

ConsumerUsage g_consumer;  // the consumer thread's usage over the last serve

namespace {

// Runs f on this thread and records this thread's usage over it.
template <typename F>
void metered(F f) {
  rusage a{}, b{};
  getrusage(RUSAGE_THREAD, &a);
  f();
  getrusage(RUSAGE_THREAD, &b);
  auto us = [](const timeval& t) { return double(t.tv_sec) * 1e6 + double(t.tv_usec); };
  g_consumer.user_us = us(b.ru_utime) - us(a.ru_utime);
  g_consumer.sys_us = us(b.ru_stime) - us(a.ru_stime);
  g_consumer.vcs = double(b.ru_nvcsw - a.ru_nvcsw);
  g_consumer.ivcs = double(b.ru_nivcsw - a.ru_nivcsw);
}

// --- the producers: P threads of blocking round trips -------------------------------

// P producer threads, `per` round trips each once `ready`, the latency of
// each measured around `trip`; the last one to finish calls `done`. The rate
// counts every round trip over the span from the first start to the last end.
struct Producers {
  std::vector<std::vector<double>> lat;
  std::vector<Clock::time_point> t0, t1;
  std::vector<std::thread> ths;
  std::atomic<int> left{0};

  template <typename Trip, typename Done>
  void start(int n, long per, std::atomic<bool>& ready, Trip trip, Done done) {
    lat.assign(size_t(n), {});
    t0.resize(size_t(n));
    t1.resize(size_t(n));
    left.store(n);
    for (int p = 0; p < n; ++p)
      ths.emplace_back([this, p, per, &ready, trip, done] {
        std::vector<double>& l = lat[size_t(p)];
        l.reserve(size_t(per));
        while (!ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        t0[size_t(p)] = Clock::now();
        for (long i = 0; i < per; ++i) {
          auto a = Clock::now();
          trip(p * per + i);
          l.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
        }
        t1[size_t(p)] = Clock::now();
        if (left.fetch_sub(1) == 1) done();
      });
  }

  RtStats join() {
    for (auto& t : ths) t.join();
    std::vector<double> all;
    for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
    double s = std::chrono::duration<double>(*std::max_element(t1.begin(), t1.end()) -
                                             *std::min_element(t0.begin(), t0.end()))
                   .count();
    return percentiles(all, s);
  }
};

// --- the ceiling ----------------------------------------------------------------------

// One request: its producer waits on the request's own condition variable,
// so an answer wakes only the producer it answers.
struct RtReq {
  long x;
  long answer = 0;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
};

struct CeilRt {
  std::mutex mu;
  std::condition_variable cv;  // CeilWake::cv: the consumer sleeps on it
  std::deque<RtReq*> q;
  int efd = eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> stop{false};
  CeilWake how;
  explicit CeilRt(CeilWake w) : how(w) {}
  ~CeilRt() { close(efd); }
  void wake();
  // A producer's round trip: push the request, wait for its answer.
  void request(long x);
  // The last producer is done: the consumer stops.
  void finish();
  // The consumer, on the Lua state's thread, until the producers stop.
  void serve(lua_State* L, int fref);
  // Swaps the queue into `local`; waits (spins, or sleeps) when it is empty.
  void take(std::deque<RtReq*>& local);
};

void CeilRt::wake() {
  if (how == CeilWake::cv) {
    cv.notify_one();
  } else if (how == CeilWake::eventfd) {
    std::uint64_t one = 1;
    if (write(efd, &one, 8) != 8) std::abort();
  }
}

void CeilRt::request(long x) {
  RtReq r;
  r.x = x;
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mu);
    was_empty = q.empty();
    q.push_back(&r);
  }
  if (was_empty) wake();
  {
    std::unique_lock<std::mutex> lock(r.mu);
    r.cv.wait(lock, [&] { return r.done; });
  }
  if (r.answer != x + 1) std::abort();
}

void CeilRt::finish() {
  {
    std::lock_guard<std::mutex> lock(mu);  // a consumer about to sleep sees it
    stop.store(true);
  }
  wake();
}

void CeilRt::take(std::deque<RtReq*>& local) {
  if (how == CeilWake::cv) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !q.empty() || stop.load(std::memory_order_relaxed); });
    local.swap(q);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    local.swap(q);
  }
  if (!local.empty()) return;
  if (how == CeilWake::eventfd) {
    std::uint64_t v;
    if (read(efd, &v, 8) != 8) std::abort();
  } else {
    sched_yield();
  }
}

void CeilRt::serve(lua_State* L, int fref) {
  std::deque<RtReq*> local;
  while (!stop.load(std::memory_order_relaxed)) {
    take(local);
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

}  // namespace

RtStats ceil_roundtrip(long count, CeilWake w, int producers) {
  lua_State* L = new_state();
  run(L, "function rt(x) return x + 1 end");
  int fref = ref_global(L, "rt");
  CeilRt c(w);
  std::atomic<bool> ready{true};
  Producers ps;
  ps.start(producers, count / producers, ready, [&](long x) { c.request(x); },
           [&] { c.finish(); });
  metered([&] { c.serve(L, fref); });
  RtStats r = ps.join();
  lua_close(L);
  return r;
}

namespace {
// --- ours ---------------------------------------------------------------------------------

// The round-trip servers, until the producers are done (the last one then
// delivers one more item, so that a sleeping loop wakes up to see it).
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
  function serve_dispatch()
    while not stopped() do
      if dispatch() == 0 then yield() end
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

// One round trip of ours: a blocking 1v0 deliver of `x`, answered x + 1.
void ours_trip(void* utilid, long x) {
  RtItem it{x, 0};
  int rc = g_api->deliver(utilid, decode_rt, ret_rt, &it);
  if (rc < DSS_SUCCESS || it.answer != x + 1) {
    std::fprintf(stderr, "bench: round trip failed: rc %d answer %ld\n", rc, it.answer);
    std::abort();
  }
}

const char* serve_fn(Wake w) {
  switch (w) {
    case Wake::busy: return "serve_busy";
    case Wake::dispatch: return "serve_dispatch";
    case Wake::udp: return "serve_sleeping";
    case Wake::fd: return "serve_fd";
    case Wake::wait: return "serve_wait";
  }
  return "";
}

}  // namespace

RtStats ours_roundtrip(long count, Wake w, int producers) {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, RT_LUA);
  g_rtref = ref_global(L, "rt");
  g_stop.store(false);
  std::atomic<bool> ready{false};
  Producers ps;
  ps.start(producers, count / producers, ready, [&](long x) { ours_trip(utilid, x); }, [&] {
    g_stop.store(true);
    deliver_ff(utilid, 0);  // wakes a sleeping loop up to see the stop
  });
  // Set up what the loop sleeps on before the first request: the helper's
  // socket (it calls setport) or the fd.
  if (w == Wake::udp) run(L, "require('dss').getsocket()");
  if (w == Wake::fd) run(L, "darksidesync.getfd()");
  ready.store(true);
  metered([&] { call(L, serve_fn(w), {}); });
  RtStats r = ps.join();
  lua_close(L);
  return r;
}

RtStats med_rt(std::vector<RtStats> v) {
  std::sort(v.begin(), v.end(), [](const RtStats& a, const RtStats& b) { return a.rate < b.rate; });
  return v[v.size() / 2];
}

namespace {

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
    vcb.push_back(ceil_roundtrip(n_busy, CeilWake::spin));
    vob.push_back(ours_roundtrip(n_busy, Wake::busy));
    vcs.push_back(ceil_roundtrip(n_sleep, CeilWake::eventfd));
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
