// stress.cpp -- the darksidesync stress harness.
//
// Acts as a client library would: it knows darksidesync only through
// include/darksidesync_api.h and the Lua registry, and loads the module with
// `require "darksidesync"` (package.cpath points at the built .so), so that
// loading and unloading it is real.
//
// S state threads each own a Lua state in turn: create it, require
// darksidesync, register two client "libraries", poll and run the callbacks
// (answering, dropping to the GC or holding waiting-thread callbacks),
// unregister and re-register mid-flight, and close it while producers are
// blocked; then open a new one. P producer threads deliver items (fire and
// forget or blocking, random decoder and Lua-side behaviour) to whatever
// utilid a state currently publishes, racing the closes, plus stale utilids.
//
// Every item has an id and a byte of atomic flags: how many times it ended,
// how many times it was decoded, whether deliver accepted or refused it. At
// the end: accepted items must have ended exactly once (lost / doubled),
// refused ones never seen by a callback. A watchdog fails the run when a
// producer stays inside deliver too long (hung).
//
// Repeatedly, the run goes through moments when every state is closed (so
// Lua has dlclosed darksidesync.so): then the module must still be mapped
// (it pins itself), every producer blocked before must have been released,
// and deliveries with stale utilids, through the API struct pointer obtained
// earlier, must return DSS_ERR_INVALID_UTILID.
#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "darksidesync_api.h"

#ifndef DSS_STRESS_MODULE_DIR
#define DSS_STRESS_MODULE_DIR "."
#endif

namespace {

using Clock = std::chrono::steady_clock;

// --- options -------------------------------------------------------------

struct Options {
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::uint64_t items = 2000000;
  double seconds = 20;
  int producers = 8;
  int states = 4;
  double hang_seconds = 30;
  double window_every = 2;  // seconds between all-closed moments
  int max_open_ms = 150;    // a state stays open 1..max_open_ms
  std::string module_dir = DSS_STRESS_MODULE_DIR;
};
Options opt;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

// --- failures --------------------------------------------------------------

std::atomic<int> g_errors{0};
std::mutex g_print_mu;

void fail(const char* fmt, ...) {
  int n = g_errors.fetch_add(1);
  if (n >= 30) return;  // enough to go on
  std::lock_guard<std::mutex> lock(g_print_mu);
  std::fprintf(stderr, "stress: FAIL: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

// --- counters ------------------------------------------------------------------

struct Stats {
  std::atomic<std::uint64_t> accepted{0}, refused{0}, not_started{0}, ff{0}, blocking{0},
      decoded{0}, returned{0}, garbage{0}, dec0{0}, cancels{0},
      client_cancels{0}, releases{0}, states_opened{0}, states_closed{0},
      unregs{0}, reregs{0}, stale{0}, windows{0}, window_probes{0},
      window_delivers{0}, max_queue{0};
  std::atomic<int> hung{0};
};
Stats st;

void update_max(std::atomic<std::uint64_t>& m, std::uint64_t v) {
  std::uint64_t cur = m.load();
  while (v > cur && !m.compare_exchange_weak(cur, v)) {
  }
}

// --- items ---------------------------------------------------------------------

// One byte of flags per item.
enum : std::uint8_t {
  F_ENDS = 0x07,      // times ended (saturates into F_DECODES only on a bug)
  F_DEC_ONE = 0x08,   // blocking item decoded with L (count, 2 bits)
  F_DECODES = 0x18,
  F_ACCEPTED = 0x20,  // deliver returned SUCCESS / UDP_SEND_FAILED
  F_REFUSED = 0x40,   // deliver returned an error
  F_STARTED = 0x80,   // deliver was called
};
std::unique_ptr<std::atomic<std::uint8_t>[]> g_items;
std::atomic<std::uint64_t> g_next_item{0};

const std::uint32_t MAGIC = 0x5eed5eedu;
const std::uint32_t PROBE = 0xffffffffu;  // idx of the all-closed probes

// Actions, chosen by the producer.
enum {
  A_DEC0 = 0,        // decoder returns 0
  A_PUSH = 1,        // fire and forget: decoder pushes the callback
  A_CALL = 1,        // blocking: Lua calls the waiting-thread callback
  A_DROP = 2,        // ... drops it to the GC
  A_HOLD = 3,        // ... keeps it, calls or drops it later (or never)
  A_CALL_TWICE = 4,  // ... calls it twice (the second call is a no-op)
};
// How an item ended, as the producer sees it.
enum { ANS_NONE = 0, ANS_RETURNED, ANS_GARBAGE, ANS_DEC0, ANS_CANCELLED };

struct Payload {
  std::uint32_t magic;
  std::uint32_t idx;
  int action;
  bool blocking;
  void* utilid;
  int answer;  // written by the ending callback, read by a released producer
};

// Records that p's item ended; returns false (and reports) if it had already.
void end_item(Payload* p, int answer) {
  p->answer = answer;
  if (p->idx == PROBE) {
    fail("a callback ran for a refused all-closed probe");
    return;
  }
  std::uint8_t old = g_items[p->idx].fetch_add(1);
  if (old & F_REFUSED) fail("item %u: callback after deliver refused it", p->idx);
  // doubles are counted at the end from the flags
}

bool check_payload(Payload* p, void* utilid, const char* who) {
  if (!p || p->magic != MAGIC) {
    fail("%s: bad pData %p", who, static_cast<void*>(p));
    return false;
  }
  if (utilid != p->utilid) {
    fail("%s: item %u: utilid %p, delivered with %p", who, p->idx, utilid,
         p->utilid);
  }
  return true;
}

const char* const CB_KEY = "stress.cb";
const char* const STEP_KEY = "stress.step";

void push_callback(lua_State* L, Payload* p) {
  lua_getfield(L, LUA_REGISTRYINDEX, CB_KEY);
  lua_pushinteger(L, lua_Integer(p->idx));
  lua_pushinteger(L, lua_Integer(p->action));
}

thread_local std::mt19937_64 t_rng;

double uniform() {
  return double(t_rng() >> 11) * (1.0 / 9007199254740992.0);
}

const DSS_api_1v0_t* api();

extern "C" {

static int stress_decode(lua_State* L, void* pData, void* utilid) {
  Payload* p = static_cast<Payload*>(pData);
  if (!check_payload(p, utilid, "decoder")) return 0;
  if (!L) {
    st.cancels++;
    end_item(p, ANS_CANCELLED);
    if (!p->blocking) delete p;
    return 0;
  }
  if (p->action == A_DEC0) {
    st.dec0++;
    end_item(p, ANS_DEC0);
    if (!p->blocking) delete p;
    return 0;
  }
  if (!lua_checkstack(L, 3)) {
    fail("decoder: lua_checkstack failed");
    return 0;
  }
  if (!p->blocking) {
    st.decoded++;
    end_item(p, ANS_RETURNED);
    push_callback(L, p);
    delete p;
    return 3;
  }
  if (p->idx != PROBE) {
    std::uint8_t old = g_items[p->idx].fetch_add(F_DEC_ONE);
    if (old & (F_DECODES | F_ENDS))
      fail("item %u: decoded again, or after it ended (flags %#x)", p->idx,
           unsigned(old));
  }
  push_callback(L, p);
  return 3;
}

static int stress_ret(lua_State* L, void* pData, void* utilid, int garbage) {
  Payload* p = static_cast<Payload*>(pData);
  if (!check_payload(p, utilid, "return callback")) return 0;
  if (!p->blocking) fail("item %u: return callback of a fire-and-forget item", p->idx);
  if (p->idx != PROBE && !(g_items[p->idx].load() & F_DECODES))
    fail("item %u: return callback before it was decoded", p->idx);
  if (!L) {
    if (garbage) fail("item %u: return callback with L == NULL and garbage", p->idx);
    st.cancels++;
    end_item(p, ANS_CANCELLED);
    return 0;
  }
  if (garbage) {
    if (p->action != A_DROP && p->action != A_HOLD)
      fail("item %u: collected, but its action was %d", p->idx, p->action);
    st.garbage++;
    end_item(p, ANS_GARBAGE);
    return 0;
  }
  if (lua_gettop(L) < 1 || !lua_isnumber(L, 1) ||
      lua_tointeger(L, 1) != lua_Integer(p->idx))
    fail("item %u: return callback got the wrong Lua arguments", p->idx);
  st.returned++;
  end_item(p, ANS_RETURNED);
  if (!lua_checkstack(L, 1)) return 0;
  lua_pushinteger(L, lua_Integer(p->idx) * 2);
  return 1;
}

static void stress_cancel(void* utilid) {
  st.client_cancels++;
  if (!utilid) fail("cancel callback with a NULL utilid");
  if (uniform() < 0.5) {
    int rc = api()->unreg(utilid);
    // INVALID_UTILID: a producer unregistered it concurrently.
    if (rc != DSS_SUCCESS && rc != DSS_ERR_INVALID_UTILID)
      fail("unreg from cancel returned %d", rc);
  }
}

}  // extern "C"

// --- the API struct, found through the registry ---------------------------

std::atomic<const DSS_api_1v0_t*> g_api{nullptr};
const DSS_api_1v0_t* api() { return g_api.load(); }

// --- is darksidesync.so mapped? ------------------------------------------------

struct MapQuery {
  const void* addr;
  bool found;
  bool contains;
};

int phdr_cb(dl_phdr_info* info, std::size_t, void* data) {
  MapQuery* q = static_cast<MapQuery*>(data);
  const char* name = info->dlpi_name;
  if (!name || !*name) return 0;
  const char* base = std::strrchr(name, '/');
  base = base ? base + 1 : name;
  if (std::strcmp(base, "darksidesync.so") != 0) return 0;
  q->found = true;
  auto a = reinterpret_cast<std::uintptr_t>(q->addr);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (a >= lo && a < lo + ph.p_memsz) q->contains = true;
  }
  return 0;
}

// Returns whether darksidesync.so is mapped, and whether it holds addr.
bool module_mapped(const void* addr, bool* contains) {
  MapQuery q = {addr, false, false};
  dl_iterate_phdr(phdr_cb, &q);
  if (contains) *contains = q.contains;
  return q.found;
}

// --- stale utilids ------------------------------------------------------------

struct StaleList {
  std::mutex mu;
  std::uintptr_t ids[256] = {};
  std::size_t n = 0;
  void push(std::uintptr_t id) {
    if (!id) return;
    std::lock_guard<std::mutex> lock(mu);
    ids[n++ % 256] = id;
  }
  std::uintptr_t pick() {
    std::lock_guard<std::mutex> lock(mu);
    if (n == 0) return 0;
    return ids[t_rng() % (n < 256 ? n : 256)];
  }
};
StaleList g_stale;

// --- slots: what each state thread publishes ---------------------------------

const int NLIBS = 2;
const char g_libids[NLIBS] = {0, 0};  // libids: their addresses

struct Slot {
  std::atomic<std::uintptr_t> utilid[NLIBS];
};
std::unique_ptr<Slot[]> g_slots;

// --- run control ---------------------------------------------------------------

std::atomic<bool> g_stop{false};
std::atomic<bool> g_want_window{false};
std::atomic<int> g_closed_waiting{0};  // state threads parked, all closed
std::atomic<int> g_states_exited{0};
std::atomic<int> g_producers_exited{0};
std::atomic<std::uint64_t> g_window_gen{0};  // odd while all are closed

struct ProducerInfo {
  std::atomic<std::int64_t> enter_ns{0};  // inside deliver since, or 0
  std::atomic<std::uint64_t> calls{0};    // delivers returned
};
std::unique_ptr<ProducerInfo[]> g_prod;

// --- the Lua side ----------------------------------------------------------------

const char* const DRIVER = R"LUA(
local dss = require "darksidesync"
local unpack = table.unpack or unpack
local random = math.random
local held, nheld = {}, 0
local maxq = 0

-- wt(idx) returns idx * 2, or nothing at all when the item was cancelled
-- meanwhile (an unreg from a producer thread): the producer checks that.
local function check(idx, ...)
  local n, r = select('#', ...), ...
  if n ~= 0 and (n ~= 1 or r ~= idx * 2) then
    error("waiting-thread callback of " .. idx .. " returned " .. tostring(r))
  end
end

-- fire and forget: cb(idx, action); blocking: cb(wt, idx, action)
local function cb(a, b, c)
  if type(a) == "number" then
    if c ~= nil or b ~= 1 then error("bad fire-and-forget arguments") end
    return
  end
  local wt, idx, action = a, b, c
  if action == 1 then
    check(idx, wt(idx))
  elseif action == 4 then
    check(idx, wt(idx))
    if select('#', wt(idx)) ~= 0 then error("second call returned values") end
  elseif action == 3 then
    nheld = nheld + 1
    held[nheld] = { wt, idx }
  elseif action ~= 2 then
    error("bad action " .. tostring(action))
  end
end

local function step(maxpolls, resolve, gc)
  local polled = 0
  for _ = 1, maxpolls do
    local n, f, args = dss.poll()
    if n == -1 then break end
    polled = polled + 1
    if n > maxq then maxq = n end
    if f then f(unpack(args)) end
  end
  if nheld > 0 and random() < resolve then
    local k = random(nheld)
    local h = held[k]
    held[k] = held[nheld]
    held[nheld] = nil
    nheld = nheld - 1
    if random() < 0.5 then
      check(h[2], h[1](h[2]))
    end
  end
  if gc then collectgarbage() end
  return polled, maxq
end

return cb, step
)LUA";

bool lua_do(lua_State* L, int nargs, int nres, const char* what) {
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    fail("%s: %s", what, lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  return true;
}

// Opens a state as a client library's host would. Returns nullptr on failure.
lua_State* open_state(std::uint64_t lua_seed) {
  lua_State* L = luaL_newstate();
  if (!L) {
    fail("luaL_newstate failed");
    return nullptr;
  }
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  std::string cpath = opt.module_dir + "/?.so";
  lua_pushstring(L, cpath.c_str());
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_getglobal(L, "math");
  lua_getfield(L, -1, "randomseed");
  lua_remove(L, -2);
  lua_pushnumber(L, lua_Number(lua_seed % 2147483647u));
  if (!lua_do(L, 1, 0, "math.randomseed")) {
    lua_close(L);
    return nullptr;
  }
  if (luaL_loadstring(L, DRIVER) != 0) {
    fail("driver: %s", lua_tostring(L, -1));
    lua_close(L);
    return nullptr;
  }
  if (!lua_do(L, 0, 2, "require darksidesync / driver")) {
    lua_close(L);
    return nullptr;
  }
  lua_setfield(L, LUA_REGISTRYINDEX, STEP_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, CB_KEY);

  // registry["DSS.DarkSideSync"]["DSS API 1v0"]
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (!lua_istable(L, -1)) {
    fail("registry has no %s table", DSS_REGISTRY_NAME);
    lua_close(L);
    return nullptr;
  }
  lua_getfield(L, -1, DSS_API_1v0_KEY);
  auto a = static_cast<const DSS_api_1v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 2);
  if (!a || std::strcmp(a->version, DSS_API_1v0_KEY) != 0) {
    fail("no valid '%s' in the registry", DSS_API_1v0_KEY);
    lua_close(L);
    return nullptr;
  }
  const DSS_api_1v0_t* expected = nullptr;
  if (!g_api.compare_exchange_strong(expected, a) && expected != a)
    fail("the API struct moved: %p, was %p (module reloaded elsewhere?)",
         static_cast<const void*>(a), static_cast<const void*>(expected));
  return L;
}

// Makes sure lib k is registered in L; publishes its utilid. Returns false
// on an unexpected error.
void ensure_registered(lua_State* L, Slot& slot, int k) {
  void* libid = const_cast<char*>(&g_libids[k]);
  int err = 0;
  void* id = api()->getutilid(L, libid, &err);
  if (id) {
    if (err != DSS_SUCCESS) fail("getutilid: utilid with code %d", err);
    return;
  }
  if (err != DSS_ERR_UNKNOWN_LIB) {
    fail("getutilid returned code %d", err);
    return;
  }
  id = api()->reg(L, libid, stress_cancel, &err);
  if (!id || err != DSS_SUCCESS) {
    fail("reg returned %p, code %d", id, err);
    return;
  }
  int err2 = 0;
  void* again = api()->reg(L, libid, stress_cancel, &err2);
  if (again != id || err2 != DSS_ERR_ALREADY_REGISTERED)
    fail("reg again returned %p code %d, expected %p ALREADY_REGISTERED", again,
         err2, id);
  slot.utilid[k].store(reinterpret_cast<std::uintptr_t>(id));
}

void wait_window() {
  if (!g_want_window.load()) return;
  g_closed_waiting.fetch_add(1);
  while (g_want_window.load())
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  g_closed_waiting.fetch_sub(1);
}

void state_thread(int s) {
  t_rng.seed(opt.seed * 1000003u + 17u + std::uint64_t(s));
  Slot& slot = g_slots[std::size_t(s)];
  while (!g_stop.load()) {
    wait_window();
    if (g_stop.load()) break;
    lua_State* L = open_state(t_rng());
    if (!L) {
      g_stop = true;
      break;
    }
    st.states_opened++;
    bool first = true;
    for (int k = 0; k < NLIBS; ++k) ensure_registered(L, slot, k);
    auto until = Clock::now() +
                 std::chrono::milliseconds(1 + std::int64_t(t_rng() % std::uint64_t(opt.max_open_ms)));
    int steps = 0;
    while (!g_stop.load() && Clock::now() < until) {
      lua_getfield(L, LUA_REGISTRYINDEX, STEP_KEY);
      lua_pushinteger(L, 64);
      lua_pushnumber(L, 0.05);
      lua_pushboolean(L, ++steps % 16 == 0);
      if (!lua_do(L, 3, 2, "step")) break;
      lua_Integer polled = lua_tointeger(L, -2);
      update_max(st.max_queue, std::uint64_t(lua_tointeger(L, -1)));
      lua_pop(L, 2);
      // Unregister a client mid-flight, now and then, from the Lua thread.
      if (uniform() < 0.004) {
        int k = int(t_rng() % NLIBS);
        std::uintptr_t id = slot.utilid[k].load();
        int rc = api()->unreg(reinterpret_cast<void*>(id));
        if (rc == DSS_SUCCESS) {
          st.unregs++;
          g_stale.push(id);
        } else if (rc != DSS_ERR_INVALID_UTILID) {
          fail("unreg returned %d", rc);
        }
      }
      // Re-register what was unregistered (here or by a producer).
      if (uniform() < 0.3 || first) {
        for (int k = 0; k < NLIBS; ++k) {
          std::uintptr_t before = slot.utilid[k].load();
          ensure_registered(L, slot, k);
          if (!first && slot.utilid[k].load() != before) st.reregs++;
        }
        first = false;
      }
      if (polled == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    // Close while producers are blocked and deliveries race the close. The
    // slot keeps publishing the utilids: they are stale from now on.
    lua_close(L);
    st.states_closed++;
    for (int k = 0; k < NLIBS; ++k) g_stale.push(slot.utilid[k].load());
    if (t_rng() % 4 == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(t_rng() % 3000));
  }
  g_states_exited.fetch_add(1);
}

// --- producers ---------------------------------------------------------------------

void producer_thread(int pi) {
  t_rng.seed(opt.seed * 7919u + 1000u + std::uint64_t(pi));
  ProducerInfo& me = g_prod[std::size_t(pi)];
  int burst = 0;
  while (!g_stop.load()) {
    std::uint64_t idx = g_next_item.fetch_add(1);
    if (idx >= opt.items) {
      g_stop = true;
      break;
    }
    Slot& slot = g_slots[std::size_t(t_rng() % std::uint64_t(opt.states))];
    int k = int(t_rng() % NLIBS);
    // Unregister from a foreign thread, now and then.
    if (uniform() < 0.002) {
      std::uintptr_t id = slot.utilid[k].load();
      int rc = api() ? api()->unreg(reinterpret_cast<void*>(id))
                     : DSS_ERR_INVALID_UTILID;
      if (rc == DSS_SUCCESS) {
        st.unregs++;
        g_stale.push(id);
      } else if (rc != DSS_ERR_INVALID_UTILID) {
        fail("unreg (producer) returned %d", rc);
      }
    }
    bool stale = uniform() < 0.03;
    std::uintptr_t id = 0;
    if (stale) {
      id = g_stale.pick();
      if (!id) stale = false;
    }
    if (!stale) id = slot.utilid[k].load();
    const DSS_api_1v0_t* a = api();
    if (!a) {  // no state opened yet
      g_items[idx].fetch_or(F_STARTED | F_REFUSED);
      std::this_thread::yield();
      continue;
    }
    // Now and then a burst of fire-and-forget items, to build up queues.
    if (burst == 0 && uniform() < 0.01) burst = 1 + int(t_rng() % 400);
    bool blocking = burst ? (--burst, false) : uniform() < 0.4;
    int action;
    double r = uniform();
    if (!blocking) {
      action = r < 0.1 ? A_DEC0 : A_PUSH;
    } else {
      action = r < 0.1    ? A_DEC0
               : r < 0.45 ? A_CALL
               : r < 0.65 ? A_DROP
               : r < 0.9  ? A_HOLD
                          : A_CALL_TWICE;
    }
    Payload local = {MAGIC, std::uint32_t(idx), action, blocking,
                     reinterpret_cast<void*>(id), ANS_NONE};
    Payload* p = blocking ? &local : new Payload(local);
    (blocking ? st.blocking : st.ff)++;
    if (stale) st.stale++;

    g_items[idx].fetch_or(F_STARTED);
    std::uint64_t gen1 = g_window_gen.load();
    me.enter_ns.store(now_ns());
    int rc = a->deliver(reinterpret_cast<void*>(id), stress_decode,
                        blocking ? stress_ret : nullptr, p);
    me.enter_ns.store(0);
    me.calls.fetch_add(1);
    std::uint64_t gen2 = g_window_gen.load();
    bool in_window = (gen1 & 1) && gen1 == gen2;  // all states closed throughout
    if (in_window) st.window_delivers++;

    if (rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED) {
      st.accepted++;
      std::uint8_t old = g_items[idx].fetch_or(F_ACCEPTED);
      if (stale) fail("item %" PRIu64 ": stale utilid %#" PRIxPTR " accepted", idx, id);
      if (in_window) fail("item %" PRIu64 ": accepted while all states were closed", idx);
      if (blocking) {
        st.releases++;
        if ((old & F_ENDS) != 1)
          fail("item %" PRIu64 ": producer released with the item ended %u times",
               idx, unsigned(old & F_ENDS));
        bool ok;
        switch (local.answer) {
          case ANS_RETURNED: ok = action == A_CALL || action == A_CALL_TWICE || action == A_HOLD; break;
          case ANS_GARBAGE: ok = action == A_DROP || action == A_HOLD; break;
          case ANS_DEC0: ok = action == A_DEC0; break;
          case ANS_CANCELLED: ok = true; break;
          default: ok = false;
        }
        if (!ok)
          fail("item %" PRIu64 ": released with answer %d for action %d", idx,
               local.answer, action);
      }
    } else {
      st.refused++;
      if (rc == DSS_ERR_NOT_STARTED) st.not_started++;
      std::uint8_t old = g_items[idx].fetch_or(F_REFUSED);
      if (old & (F_ENDS | F_DECODES))
        fail("item %" PRIu64 ": refused (%d) but its callbacks ran", idx, rc);
      if (rc != DSS_ERR_INVALID_UTILID && rc != DSS_ERR_NOT_STARTED)
        fail("item %" PRIu64 ": deliver returned %d", idx, rc);
      if ((stale || in_window) && rc != DSS_ERR_INVALID_UTILID)
        fail("item %" PRIu64 ": stale utilid: deliver returned %d, not INVALID_UTILID", idx, rc);
      if (!blocking) delete p;
      // Back off a little, as a client would: refusals are instant, and
      // would otherwise crowd out the deliveries that get through.
      std::this_thread::sleep_for(std::chrono::microseconds(20 + t_rng() % 80));
    }
    if (uniform() < 0.01)
      std::this_thread::sleep_for(std::chrono::microseconds(t_rng() % 300));
  }
  g_producers_exited.fetch_add(1);
}

// --- all states closed ---------------------------------------------------------------

void do_window() {
  g_want_window = true;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (g_closed_waiting.load() + g_states_exited.load() < opt.states) {
    if (Clock::now() > deadline) {
      fail("the states did not all close within 10 s for an all-closed moment");
      g_want_window = false;
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  g_window_gen.fetch_add(1);  // odd: every state is closed
  st.windows++;
  const DSS_api_1v0_t* a = api();
  bool contains = false;
  if (!module_mapped(a, &contains))
    fail("all states closed: darksidesync.so is no longer mapped");
  else if (a && !contains)
    fail("all states closed: the API struct %p is outside darksidesync.so",
         static_cast<const void*>(a));

  // Every producer that was inside deliver must come out: nothing is open.
  std::vector<std::uint64_t> calls(std::size_t(opt.producers));
  std::vector<bool> inside(std::size_t(opt.producers));
  for (int i = 0; i < opt.producers; ++i) {
    inside[std::size_t(i)] = g_prod[std::size_t(i)].enter_ns.load() != 0;
    calls[std::size_t(i)] = g_prod[std::size_t(i)].calls.load();
  }
  deadline = Clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < opt.producers; ++i) {
    while (inside[std::size_t(i)] && g_prod[std::size_t(i)].calls.load() == calls[std::size_t(i)] &&
           g_prod[std::size_t(i)].enter_ns.load() != 0) {
      if (Clock::now() > deadline) {
        fail("all states closed: producer %d still inside deliver after 10 s", i);
        st.hung++;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // Stale utilids, through the API pointer obtained earlier.
  if (a) {
    if (std::strcmp(a->version, DSS_API_1v0_KEY) != 0)
      fail("all states closed: the API struct's version reads '%s'", a->version);
    for (int i = 0; i < 8; ++i) {
      std::uintptr_t id = i < opt.states * NLIBS
                              ? g_slots[std::size_t(i / NLIBS)].utilid[i % NLIBS].load()
                              : g_stale.pick();
      Payload probe = {MAGIC, PROBE, A_CALL, i % 2 == 1, reinterpret_cast<void*>(id), ANS_NONE};
      int rc = a->deliver(reinterpret_cast<void*>(id), stress_decode,
                          probe.blocking ? stress_ret : nullptr, &probe);
      if (rc != DSS_ERR_INVALID_UTILID)
        fail("all states closed: deliver(stale %#" PRIxPTR ") returned %d", id, rc);
      rc = a->unreg(reinterpret_cast<void*>(id));
      if (rc != DSS_ERR_INVALID_UTILID)
        fail("all states closed: unreg(stale %#" PRIxPTR ") returned %d", id, rc);
      st.window_probes++;
    }
  }
  // Let the producers deliver into the void for a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  g_window_gen.fetch_add(1);  // even: states may open again
  g_want_window = false;
}

// --- main --------------------------------------------------------------------------------

void usage() {
  std::fprintf(stderr,
               "usage: stress [--seed N] [--items N] [--seconds S] [--producers P]\n"
               "              [--states S] [--hang-seconds S] [--window-every S]\n"
               "              [--max-open-ms MS] [--module-dir DIR]\n");
  std::exit(2);
}

void parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage();
    const char* v = argv[++i];
    if (a == "--seed") {
      opt.seed = std::strtoull(v, nullptr, 10);
      opt.seed_given = true;
    } else if (a == "--items") {
      opt.items = std::strtoull(v, nullptr, 10);
    } else if (a == "--seconds") {
      opt.seconds = std::atof(v);
    } else if (a == "--producers") {
      opt.producers = std::atoi(v);
    } else if (a == "--states") {
      opt.states = std::atoi(v);
    } else if (a == "--hang-seconds") {
      opt.hang_seconds = std::atof(v);
    } else if (a == "--window-every") {
      opt.window_every = std::atof(v);
    } else if (a == "--max-open-ms") {
      opt.max_open_ms = std::atoi(v);
    } else if (a == "--module-dir") {
      opt.module_dir = v;
    } else {
      usage();
    }
  }
  if (opt.producers < 1 || opt.states < 1 || opt.max_open_ms < 1 ||
      opt.items > 0xfffffff0u)
    usage();
  if (!opt.seed_given) {
    std::random_device rd;
    opt.seed = (std::uint64_t(rd()) << 32 | rd()) % 1000000000u;
  }
}

struct Result {
  std::uint64_t issued = 0, lost = 0, doubled = 0, refused_called = 0,
                unfinished = 0;
};

Result account() {
  Result r;
  r.issued = g_next_item.load();
  if (r.issued > opt.items) r.issued = opt.items;
  for (std::uint64_t i = 0; i < r.issued; ++i) {
    std::uint8_t b = g_items[i].load();
    unsigned ends = b & F_ENDS;
    unsigned decodes = (b & F_DECODES) / F_DEC_ONE;
    if (decodes > 1) ++r.doubled;
    if (b & F_ACCEPTED) {
      if (ends == 0) ++r.lost;
      else if (ends > 1) ++r.doubled;
    } else if (b & F_REFUSED) {
      if (ends || decodes) ++r.refused_called;
    } else if (b & F_STARTED) {
      ++r.unfinished;  // deliver never returned
    }
  }
  return r;
}

void summary(const Result& r, double secs, bool passed) {
  std::printf(
      "stress: seed=%" PRIu64 " items=%" PRIu64 " accepted=%" PRIu64
      " refused=%" PRIu64 " refused_closing=%" PRIu64 " blocking=%" PRIu64 " fire_and_forget=%" PRIu64
      " states_opened=%" PRIu64 " states_closed=%" PRIu64
      " all_closed_moments=%" PRIu64 " cancels=%" PRIu64
      " client_cancels=%" PRIu64 " releases=%" PRIu64 " returned=%" PRIu64
      " garbage=%" PRIu64 " decoded=%" PRIu64 " decoder0=%" PRIu64
      " unregs=%" PRIu64 " reregs=%" PRIu64 " stale=%" PRIu64
      " max_queue_depth=%" PRIu64 " lost=%" PRIu64 " doubled=%" PRIu64
      " hung=%d errors=%d duration=%.1fs\n",
      opt.seed, r.issued, st.accepted.load(), st.refused.load(), st.not_started.load(),
      st.blocking.load(), st.ff.load(), st.states_opened.load(),
      st.states_closed.load(), st.windows.load(), st.cancels.load(),
      st.client_cancels.load(), st.releases.load(), st.returned.load(),
      st.garbage.load(), st.decoded.load(), st.dec0.load(), st.unregs.load(),
      st.reregs.load(), st.stale.load(), st.max_queue.load(), r.lost,
      r.doubled, st.hung.load(), g_errors.load(), secs);
  std::printf("stress: %d passed, %d failed\n", passed ? 1 : 0, passed ? 0 : 1);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  parse(argc, argv);
  std::printf("stress: seed=%" PRIu64 " items<=%" PRIu64 " seconds<=%.0f producers=%d states=%d module=%s/darksidesync.so\n",
              opt.seed, opt.items, opt.seconds, opt.producers, opt.states,
              opt.module_dir.c_str());
  std::fflush(stdout);
  if (module_mapped(nullptr, nullptr))
    fail("darksidesync.so is mapped before any require: the harness must not load it");

  g_items.reset(new std::atomic<std::uint8_t>[opt.items + 1]());
  g_slots.reset(new Slot[std::size_t(opt.states)]);
  for (int s = 0; s < opt.states; ++s)
    for (int k = 0; k < NLIBS; ++k) g_slots[std::size_t(s)].utilid[k].store(0);
  g_prod.reset(new ProducerInfo[std::size_t(opt.producers)]);

  auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::vector<std::thread> threads;
  for (int s = 0; s < opt.states; ++s) threads.emplace_back(state_thread, s);
  for (int p = 0; p < opt.producers; ++p) threads.emplace_back(producer_thread, p);

  double next_window = 0.5;
  double stop_at = -1;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    double t = elapsed();
    if (!g_stop.load() && t >= opt.seconds) g_stop = true;
    if (g_stop.load() && stop_at < 0) stop_at = t;
    // Watchdog: a producer inside deliver for too long is hung.
    std::int64_t now = now_ns();
    for (int i = 0; i < opt.producers; ++i) {
      std::int64_t e = g_prod[std::size_t(i)].enter_ns.load();
      if (e && double(now - e) / 1e9 > opt.hang_seconds) {
        fail("producer %d inside deliver for more than %.0f s", i, opt.hang_seconds);
        st.hung++;
      }
    }
    bool done = g_producers_exited.load() == opt.producers &&
                g_states_exited.load() == opt.states;
    if (st.hung.load() || (stop_at >= 0 && !done && t - stop_at > opt.hang_seconds)) {
      if (!st.hung.load()) {
        fail("threads did not finish within %.0f s of the stop", opt.hang_seconds);
        st.hung++;
      }
      summary(account(), elapsed(), false);
      std::_Exit(1);  // threads are stuck: do not join them
    }
    if (done) break;
    if (!g_stop.load() && t >= next_window) {
      do_window();
      next_window = elapsed() + opt.window_every;
    }
  }
  for (std::thread& th : threads) th.join();
  double secs = elapsed();

  // Every state is closed now: the module must still be there.
  if (st.states_opened.load() && !module_mapped(api(), nullptr))
    fail("after the run: darksidesync.so is no longer mapped");
  Result r = account();
  if (r.refused_called) fail("%" PRIu64 " refused items had callbacks", r.refused_called);
  if (r.unfinished) fail("%" PRIu64 " items: deliver never returned", r.unfinished);
  if (r.lost) fail("%" PRIu64 " items lost", r.lost);
  if (r.doubled) fail("%" PRIu64 " items ended more than once", r.doubled);
  if (st.states_closed.load() != st.states_opened.load())
    fail("states opened %" PRIu64 ", closed %" PRIu64, st.states_opened.load(),
         st.states_closed.load());
  if (st.windows.load() == 0 && secs > 1.0)
    fail("the run never went through a moment with all states closed");
  bool passed = g_errors.load() == 0 && st.hung.load() == 0;
  summary(r, secs, passed);
  return passed ? 0 : 1;
}
