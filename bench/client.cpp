// client.cpp -- "ours": the bench as a client library of darksidesync. It
// loads the module with `require` and delivers through the registry ABI from
// producer threads, exactly as a client would: only
// include/darksidesync_api.h, never src/ (runner.h).
#include <sched.h>

#include <thread>

#include "runner.h"

namespace bench {

const DSS_api_1v0_t* g_api = nullptr;
const DSS_api_2v0_t* g_api2 = nullptr;

namespace {

char g_libid;
int g_cbref = LUA_NOREF;  // the Lua callback decode_ff pushes

void client_cancel(void* utilid) { g_api->unreg(utilid); }

// The Lua side of ours: the consumer loops, one per way of taking items.
const char* const OURS_LUA = R"(
  darksidesync = require "darksidesync"
  local dss_ = darksidesync
  local poll, dispatch = dss_.poll, dss_.dispatch
  local yield, pollfd = bench_yield, bench_pollfd
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
  function stat(name) return dss_.stats()[name] end
)";

const char* drain_fn(Drain d) {
  switch (d) {
    case Drain::poll: return "drain";
    case Drain::dispatch: return "drain_dispatch";
    case Drain::fd: return "drain_fd";
  }
  return "";
}

template <typename T>
const T* api_at(lua_State* L, const char* key, const char* what) {
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  lua_getfield(L, -1, key);
  const T* api = static_cast<const T*>(lua_touserdata(L, -1));
  lua_pop(L, 2);
  if (!api) {
    std::fprintf(stderr, "bench: no DSS API %s in the registry\n", what);
    std::exit(2);
  }
  return api;
}

}  // namespace

int decode_ff(lua_State* L, void* data, void*) {
  if (!L) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g_cbref);
  lua_pushinteger(L, lua_Integer(reinterpret_cast<std::intptr_t>(data)));
  return 2;
}

void* ours_state(lua_State** out) {
  lua_State* L = new_state();
  run(L, COMMON_LUA);
  run(L, OURS_LUA);
  g_cbref = ref_global(L, "cb");
  g_api = api_at<DSS_api_1v0_t>(L, DSS_API_1v0_KEY, "1v0");
  g_api2 = api_at<DSS_api_2v0_t>(L, DSS_API_2v0_KEY, "2v0");
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

void deliver_ff(void* utilid, long x, bool v2) {
  void* data = reinterpret_cast<void*>(std::intptr_t(x));
  int rc = v2 ? g_api2->deliver2(utilid, decode_ff, nullptr, data, 0, DSS_TIMEOUT_INFINITE)
              : g_api->deliver(utilid, decode_ff, nullptr, data);
  if (rc < DSS_SUCCESS) {
    std::fprintf(stderr, "bench: deliver failed: %d\n", rc);
    std::abort();
  }
}

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

double ours_throughput(int producers, long total, Drain d) {
  FfRun r;
  r.producers = producers;
  r.drain = d;
  return ours_ff(r, total).rate;
}

double ours_drain_at_depth(long depth, double* fill_rate, Drain d, bool v2) {
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

}  // namespace bench
