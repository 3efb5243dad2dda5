// fuzz_dss.cpp -- libFuzzer target: the DSS API 1v0 (C ABI, found through
// the registry as a client would) and the Lua API of darksidesync, driven by
// the input bytes, with invariants checked as it goes.
//
// Encoding: the input is a sequence of operations. Each operation is one
// opcode byte (taken modulo OP_COUNT) followed by one or two argument bytes
// (missing bytes read as 0). See the `switch` in run_op for what each does.
//
// Invariants (any violation: a message on stderr and abort(), which libFuzzer
// reports as a crash with the input):
//   - every accepted item ends exactly once (decoder of a fire-and-forget
//     item, decoder returning 0 / raising, return callback called / garbage /
//     cancelled); a rejected item is never seen by any callback;
//   - a blocking producer returns only after its item ended, and every
//     producer is released by the end of the input (bounded wait);
//   - return codes of reg / getutilid / deliver / unreg as documented (live
//     ids accepted; stale, garbage or unregistered ids: INVALID_UTILID; NULL
//     decoder: NO_DECODE_PROVIDED; NULL cancel: NO_CANCEL_PROVIDED);
//   - queuesize() and poll()'s `remaining` equal the model's queue count;
//   - setport accepts exactly the integers 0..65535;
//   - each client is cancelled exactly once when its state closes;
//   - the waiting-thread callback: only the first call counts, tostring says
//     "pending" exactly while its item has not ended.
// Each input closes its Lua state and joins its threads before returning.
extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "darksidesync_api.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

extern "C" int luaopen_darksidesync(lua_State* L);

namespace {

[[noreturn]] void fail(const char* what, long a = 0, long b = 0) {
  std::fprintf(stderr, "fuzz_dss: INVARIANT VIOLATED: %s (%ld, %ld)\n", what,
               a, b);
  std::fflush(stderr);
  std::abort();
}

#define CHECK(cond, ...) \
  do {                   \
    if (!(cond)) fail(#cond, ##__VA_ARGS__); \
  } while (0)

constexpr int MAX_RECS = 512;
constexpr int MAX_PRODUCERS = 48;   // per input
constexpr int MAX_BLOCKED = 4;      // at the same time
constexpr int NSLOTS = 3;           // client libraries
constexpr int NWT = 8;              // waiting-thread callbacks kept by Lua
constexpr int MAX_STALE = 16;
constexpr auto BOUND = std::chrono::seconds(5);

enum DecodeMode { D_NORMAL, D_ZERO, D_RAISE, D_OVER, D_UNREG, D_DELIVER, D_COUNT };
enum ReturnMode { R_NONE, R_ONE, R_RAISE, R_OVER, R_ECHO, R_COUNT };

struct Rec {
  std::uintptr_t utilid;
  bool blocking;
  int dmode;
  int rmode;
  std::atomic<int> ends;
  std::atomic<int> decoded;   // decoder called with a Lua state
  std::atomic<bool> accepted;
  std::atomic<bool> queued_seen;  // blocking: seen in the queue
  bool wt_dropped;
};

struct Producer {
  std::thread th;
  std::atomic<bool> done;
  int rc;
  Rec* rec;
  bool expect_ok;
  bool null_decoder;
};

struct Slot {
  std::uintptr_t utilid;  // 0: not registered
  int cmode;              // cancel: bit 0 unreg itself, bit 1 try to deliver
  int cancels;
};

struct Ctx {
  lua_State* L;
  DSS_api_1v0_t* api;
  int modref;  // module table
  int wtref;   // table of waiting-thread callbacks
  Rec recs[MAX_RECS];
  int nrecs;
  Producer prods[MAX_PRODUCERS];
  int nprods;
  Slot slots[NSLOTS];
  std::uintptr_t stale[MAX_STALE];
  int nstale;
  Rec* wt[NWT];
  Rec* last_decoded;
  int expect_nargs;
  bool closing;
  int cb_calls;
};

Ctx g;
char libids[NSLOTS];
DSS_api_1v0_t* first_api = nullptr;

// --- model ----------------------------------------------------------------

void end_item(Rec* r) {
  int prev = r->ends.fetch_add(1);
  if (prev != 0) fail("item ended twice", long(r - g.recs), prev + 1);
  if (!r->accepted.load() && !r->blocking)
    fail("a callback saw an item whose deliver was not accepted",
         long(r - g.recs));
}

bool is_live(std::uintptr_t id) {
  if (!id) return false;
  for (const Slot& s : g.slots)
    if (s.utilid == id) return true;
  return false;
}

int slot_of(std::uintptr_t id) {
  for (int i = 0; i < NSLOTS; ++i)
    if (g.slots[i].utilid == id && id) return i;
  return -1;
}

void make_stale(int slot) {
  if (g.nstale < MAX_STALE) g.stale[g.nstale++] = g.slots[slot].utilid;
  else g.stale[MAX_STALE - 1] = g.slots[slot].utilid;
  g.slots[slot].utilid = 0;
}

std::size_t expected_queued() {
  std::size_t n = 0;
  for (int i = 0; i < g.nrecs; ++i) {
    Rec& r = g.recs[i];
    bool in = r.blocking ? r.queued_seen.load() : r.accepted.load();
    if (in && r.decoded.load() == 0 && r.ends.load() == 0) ++n;
  }
  return n;
}

Rec* new_rec(std::uintptr_t utilid, bool blocking, int dmode, int rmode) {
  if (g.nrecs >= MAX_RECS) return nullptr;
  Rec* r = &g.recs[g.nrecs++];
  r->utilid = utilid;
  r->blocking = blocking;
  r->dmode = dmode;
  r->rmode = rmode;
  r->ends.store(0);
  r->decoded.store(0);
  r->accepted.store(false);
  r->queued_seen.store(false);
  r->wt_dropped = false;
  return r;
}

// --- client callbacks -------------------------------------------------------

int lua_cb(lua_State*) {
  ++g.cb_calls;
  return 0;
}

int decoder(lua_State* L, void* data, void* utilid);

void deliver_ff(std::uintptr_t id, int dmode, bool null_decoder);

int decoder(lua_State* L, void* data, void* utilid) {
  Rec* r = static_cast<Rec*>(data);
  if (reinterpret_cast<std::uintptr_t>(utilid) != r->utilid)
    fail("decoder got another utilid", long(r - g.recs));
  if (!L) {  // cancelled while queued
    end_item(r);
    return 0;
  }
  if (r->decoded.fetch_add(1) != 0) fail("decoded twice", long(r - g.recs));
  if (g.closing) fail("decoder ran with L during close");
  g.last_decoded = r;
  switch (r->dmode) {
    case D_ZERO:
      end_item(r);
      return 0;
    case D_RAISE:
      end_item(r);
      luaL_error(L, "fuzz decoder error");
      return 0;
    case D_OVER:
      end_item(r);
      lua_pushcfunction(L, lua_cb);
      return 3;  // pushed 1
    case D_UNREG: {
      int s = slot_of(r->utilid);
      int rc = g.api->unreg(utilid);
      if (s >= 0) {
        CHECK(rc == DSS_SUCCESS, rc);
        make_stale(s);
      } else {
        CHECK(rc == DSS_ERR_INVALID_UTILID, rc);
      }
      break;
    }
    case D_DELIVER:
      deliver_ff(r->utilid, D_NORMAL, false);
      break;
    default:
      break;
  }
  if (!r->blocking) end_item(r);
  lua_pushcfunction(L, lua_cb);
  lua_pushinteger(L, lua_Integer(r - g.recs));
  lua_pushliteral(L, "fuzz");
  return 3;
}

int retcb(lua_State* L, void* data, void* utilid, int garbage) {
  Rec* r = static_cast<Rec*>(data);
  if (reinterpret_cast<std::uintptr_t>(utilid) != r->utilid)
    fail("return callback got another utilid", long(r - g.recs));
  if (!r->blocking) fail("return callback of a fire-and-forget item");
  if (r->decoded.load() == 0) fail("return callback before decoding");
  end_item(r);
  if (!L) return 0;
  if (garbage) {
    if (lua_gettop(L) != 0) fail("garbage return callback with arguments", lua_gettop(L));
    if (r->rmode == R_RAISE) luaL_error(L, "fuzz return error (gc)");
    return 0;
  }
  if (lua_gettop(L) != g.expect_nargs)
    fail("return callback: wrong argument count", lua_gettop(L), g.expect_nargs);
  switch (r->rmode) {
    case R_ONE:
      lua_pushinteger(L, 42);
      return 1;
    case R_RAISE:
      luaL_error(L, "fuzz return error");
      return 0;
    case R_OVER:
      lua_pushinteger(L, 1);
      return lua_gettop(L) + 3;
    case R_ECHO:
      return lua_gettop(L);
    default:
      return 0;
  }
}

void cancelcb(void* utilid) {
  std::uintptr_t id = reinterpret_cast<std::uintptr_t>(utilid);
  int s = slot_of(id);
  if (s < 0) fail("cancel for an id that is not registered", long(id));
  if (!g.closing) fail("cancel outside lua_close");
  Slot& sl = g.slots[s];
  if (++sl.cancels != 1) fail("client cancelled twice", s);
  if (sl.cmode & 2) {
    Rec* r = new_rec(id, false, D_NORMAL, R_NONE);
    if (r) {
      int rc = g.api->deliver(utilid, decoder, nullptr, r);
      CHECK(rc == DSS_ERR_NOT_STARTED || rc == DSS_ERR_INVALID_UTILID, rc);
    }
  }
  if (sl.cmode & 1) {
    int rc = g.api->unreg(utilid);
    CHECK(rc == DSS_SUCCESS, rc);
  }
}

// --- Lua helpers --------------------------------------------------------------

int open_module(lua_State* L) {
  luaL_requiref(L, "darksidesync", luaopen_darksidesync, 1);
  return 1;
}

void find_api() {
  lua_State* L = g.L;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  CHECK(lua_istable(L, -1));
  lua_getfield(L, -1, DSS_API_1v0_KEY);
  CHECK(lua_islightuserdata(L, -1));
  g.api = static_cast<DSS_api_1v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 2);
  CHECK(g.api && std::strcmp(g.api->version, DSS_API_1v0_KEY) == 0);
  if (!first_api) first_api = g.api;
  CHECK(first_api == g.api);  // valid for the life of the process
}

void open_state() {
  if (g.L) return;
  g.L = luaL_newstate();
  CHECK(g.L != nullptr);
  luaL_openlibs(g.L);
  lua_pushcfunction(g.L, open_module);
  if (lua_pcall(g.L, 0, 1, 0) != LUA_OK) fail("require darksidesync failed");
  g.modref = luaL_ref(g.L, LUA_REGISTRYINDEX);
  lua_newtable(g.L);
  g.wtref = luaL_ref(g.L, LUA_REGISTRYINDEX);
  find_api();
  for (Rec*& w : g.wt) w = nullptr;
}

// Pushes module function `name`.
void push_fn(const char* name) {
  lua_rawgeti(g.L, LUA_REGISTRYINDEX, g.modref);
  lua_getfield(g.L, -1, name);
  lua_remove(g.L, -2);
}

std::size_t lua_queuesize() {
  push_fn("queuesize");
  if (lua_pcall(g.L, 0, 1, 0) != LUA_OK) fail("queuesize raised");
  lua_Integer n = lua_tointeger(g.L, -1);
  lua_pop(g.L, 1);
  return std::size_t(n);
}

void join_producers() {
  for (int i = 0; i < g.nprods; ++i) {
    Producer& p = g.prods[i];
    auto deadline = std::chrono::steady_clock::now() + BOUND;
    while (!p.done.load()) {
      if (std::chrono::steady_clock::now() > deadline)
        fail("a blocked producer was never released", i,
             long(p.rec - g.recs));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    p.th.join();
  }
  g.nprods = 0;
}

void close_state() {
  if (!g.L) return;
  std::uintptr_t live[NSLOTS];
  for (int i = 0; i < NSLOTS; ++i) {
    live[i] = g.slots[i].utilid;
    g.slots[i].cancels = 0;
  }
  g.closing = true;
  lua_close(g.L);
  g.closing = false;
  g.L = nullptr;
  for (int i = 0; i < NSLOTS; ++i) {
    if (live[i]) {
      CHECK(g.slots[i].cancels == 1, i, g.slots[i].cancels);
      make_stale(i);
    }
  }
  join_producers();
  // Everything accepted so far has ended.
  for (int i = 0; i < g.nrecs; ++i) {
    Rec& r = g.recs[i];
    if (r.accepted.load() && r.ends.load() != 1)
      fail("accepted item not ended after lua_close", i, r.ends.load());
  }
  // Ids of the closed state are now stale.
  for (int i = 0; i < NSLOTS; ++i) {
    if (live[i]) {
      CHECK(g.api->unreg(reinterpret_cast<void*>(live[i])) ==
            DSS_ERR_INVALID_UTILID);
    }
  }
}

// --- operations ---------------------------------------------------------------

std::uintptr_t pick_target(int t) {
  static int on_stack;
  switch (t % 8) {
    case 0:
    case 1:
    case 2:
      if (g.slots[t % 8].utilid) return g.slots[t % 8].utilid;
      return g.nstale ? g.stale[g.nstale - 1] : 0;
    case 3:
      return g.nstale ? g.stale[(t >> 3) % g.nstale] : 1;
    case 4:
      return 0;
    case 5: {
      static const std::uintptr_t garbage[] = {
          1, 0xdeadbeef, ~std::uintptr_t(0), 0x5d55000, 0x5d55001,
          0x5d55002, std::uintptr_t(0x8000000000000000ull), 0x1000};
      return garbage[(t >> 3) % 8];
    }
    case 6: {
      std::uintptr_t base = 0x5d55000;
      for (const Slot& s : g.slots)
        if (s.utilid > base) base = s.utilid;
      return base + 1 + std::uintptr_t(t >> 3);
    }
    default:
      return reinterpret_cast<std::uintptr_t>(&on_stack);
  }
}

void deliver_ff(std::uintptr_t id, int dmode, bool null_decoder) {
  Rec* r = new_rec(id, false, dmode, R_NONE);
  if (!r) return;
  bool live = is_live(id);
  int rc = g.api->deliver(reinterpret_cast<void*>(id),
                          null_decoder ? nullptr : decoder, nullptr, r);
  if (null_decoder) {
    if (live) CHECK(rc == DSS_ERR_NO_DECODE_PROVIDED, rc);
    else CHECK(rc == DSS_ERR_NO_DECODE_PROVIDED || rc == DSS_ERR_INVALID_UTILID, rc);
    return;
  }
  if (live) {
    CHECK(rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED, rc);
    r->accepted.store(true);
  } else {
    CHECK(rc == DSS_ERR_INVALID_UTILID, rc, long(id));
  }
}

void deliver_blocking(std::uintptr_t id, int dmode, int rmode, bool null_decoder) {
  if (g.nprods >= MAX_PRODUCERS) return;
  int blocked = 0;
  for (int i = 0; i < g.nprods; ++i)
    if (!g.prods[i].done.load()) ++blocked;
  if (blocked >= MAX_BLOCKED) return;
  Rec* r = new_rec(id, true, dmode, rmode);
  if (!r) return;
  bool live = is_live(id);
  std::size_t before = g.L ? lua_queuesize() : 0;
  Producer& p = g.prods[g.nprods++];
  p.done.store(false);
  p.rc = 0;
  p.rec = r;
  p.expect_ok = live && !null_decoder;
  p.null_decoder = null_decoder;
  Producer* pp = &p;
  DSS_api_1v0_t* api = g.api;
  p.th = std::thread([pp, api] {
    Rec* rr = pp->rec;
    int rc = api->deliver(reinterpret_cast<void*>(rr->utilid),
                          pp->null_decoder ? nullptr : decoder, retcb, rr);
    pp->rc = rc;
    if (pp->expect_ok) {
      if (rc != DSS_SUCCESS && rc != DSS_ERR_UDP_SEND_FAILED)
        fail("blocking deliver to a live id refused", rc);
      if (rr->ends.load() != 1)
        fail("blocking producer released before its item ended",
             long(rr - g.recs), rr->ends.load());
      rr->accepted.store(true);
    } else if (pp->null_decoder) {
      if (rc != DSS_ERR_NO_DECODE_PROVIDED && rc != DSS_ERR_INVALID_UTILID)
        fail("blocking deliver with NULL decoder", rc);
    } else if (rc != DSS_ERR_INVALID_UTILID) {
      fail("blocking deliver to a dead id", rc, long(rr->utilid));
    }
    pp->done.store(true);
  });
  auto deadline = std::chrono::steady_clock::now() + BOUND;
  if (!p.expect_ok) {
    // Refused at once; wait for it, so that the id cannot become live (a
    // later reg) before the producer has handed it in.
    while (!p.done.load()) {
      if (std::chrono::steady_clock::now() > deadline)
        fail("blocking deliver to a dead id did not return");
      std::this_thread::yield();
    }
    return;
  }
  // Wait until it is queued, so the model stays exact.
  for (;;) {
    if (lua_queuesize() > before) {
      r->queued_seen.store(true);
      break;
    }
    if (p.done.load()) fail("blocking deliver returned before being served");
    if (std::chrono::steady_clock::now() > deadline)
      fail("blocking deliver never queued");
    std::this_thread::yield();
  }
}

void op_poll(int arg) {
  lua_State* L = g.L;
  std::size_t before = expected_queued();
  int top = lua_gettop(L);
  g.last_decoded = nullptr;
  push_fn("poll");
  int status = lua_pcall(L, 0, LUA_MULTRET, 0);
  Rec* r = g.last_decoded;
  int nres = lua_gettop(L) - top;
  if (status != LUA_OK) {
    if (!r || (r->dmode != D_RAISE && r->dmode != D_OVER))
      fail("poll raised", r ? r->dmode : -1);
    CHECK(r->ends.load() == 1);
    lua_settop(L, top);
    return;
  }
  if (!r) {
    CHECK(nres == 1 && lua_tointeger(L, -1) == -1, nres);
    CHECK(before == 0, long(before));
    lua_settop(L, top);
    return;
  }
  CHECK(before > 0);
  std::size_t now = expected_queued();
  if (r->dmode == D_ZERO) {
    CHECK(nres == 1, nres);
    CHECK(std::size_t(lua_tointeger(L, -1)) == now, long(lua_tointeger(L, -1)), long(now));
    CHECK(r->ends.load() == 1);
    lua_settop(L, top);
    return;
  }
  CHECK(nres == 3, nres, r->dmode);
  CHECK(std::size_t(lua_tointeger(L, top + 1)) == now, long(lua_tointeger(L, top + 1)), long(now));
  CHECK(lua_isfunction(L, top + 2));
  CHECK(lua_istable(L, top + 3));
  int off = r->blocking ? 1 : 0;
  CHECK(int(luaL_len(L, top + 3)) == 2 + off, long(luaL_len(L, top + 3)));
  if (r->blocking) {
    lua_rawgeti(L, top + 3, 1);
    CHECK(lua_type(L, -1) == LUA_TUSERDATA);
    int k = (arg >> 1) % NWT;
    if (g.wt[k]) g.wt[k]->wt_dropped = true;  // the old one goes to the GC
    lua_rawgeti(L, LUA_REGISTRYINDEX, g.wtref);
    lua_insert(L, -2);
    lua_rawseti(L, -2, k + 1);
    lua_pop(L, 1);
    g.wt[k] = r;
  }
  if (arg & 1) {
    // callback(table.unpack(args)); the callback does not touch the wt
    lua_pushvalue(L, top + 2);
    int n = int(luaL_len(L, top + 3));
    for (int i = 1; i <= n; ++i) lua_rawgeti(L, top + 3, i);
    int calls = g.cb_calls;
    if (lua_pcall(L, n, 0, 0) != LUA_OK) fail("callback raised");
    CHECK(g.cb_calls == calls + 1);
  }
  lua_settop(L, top);
}

// Calls waiting-thread callback k with nargs integer arguments.
void call_wt(int k, int nargs) {
  Rec* r = g.wt[k];
  if (!r) return;
  lua_State* L = g.L;
  int top = lua_gettop(L);
  bool pending = r->ends.load() == 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g.wtref);
  lua_rawgeti(L, -1, k + 1);
  lua_remove(L, -2);
  for (int i = 0; i < nargs; ++i) lua_pushinteger(L, i);
  g.expect_nargs = nargs;
  int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
  int nres = lua_gettop(L) - top;
  if (pending) {
    CHECK(r->ends.load() == 1, long(r - g.recs));
    bool raises = r->rmode == R_RAISE || r->rmode == R_OVER;
    if (raises) CHECK(status != LUA_OK, r->rmode);
    else CHECK(status == LUA_OK, r->rmode, status);
    if (status == LUA_OK) {
      int want = r->rmode == R_ONE ? 1 : r->rmode == R_ECHO ? nargs : 0;
      CHECK(nres == want, nres, want);
    }
  } else {
    CHECK(status == LUA_OK, status);
    CHECK(nres == 0, nres);
  }
  lua_settop(L, top);
}

void op_wt_tostring(int k) {
  Rec* r = g.wt[k];
  if (!r) return;
  lua_State* L = g.L;
  lua_getglobal(L, "tostring");
  lua_rawgeti(L, LUA_REGISTRYINDEX, g.wtref);
  lua_rawgeti(L, -1, k + 1);
  lua_remove(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) fail("tostring(wt) raised");
  const char* s = lua_tostring(L, -1);
  CHECK(s != nullptr);
  bool says_pending = std::strstr(s, "(pending)") != nullptr;
  CHECK(says_pending == (r->ends.load() == 0), long(r - g.recs));
  lua_pop(L, 1);
}

void op_drop_wt(int k) {
  if (!g.wt[k]) return;
  g.wt[k]->wt_dropped = true;
  g.wt[k] = nullptr;
  lua_rawgeti(g.L, LUA_REGISTRYINDEX, g.wtref);
  lua_pushnil(g.L);
  lua_rawseti(g.L, -2, k + 1);
  lua_pop(g.L, 1);
}

void op_gc() {
  lua_gc(g.L, LUA_GCCOLLECT, 0);
  lua_gc(g.L, LUA_GCCOLLECT, 0);
  for (int i = 0; i < g.nrecs; ++i) {
    Rec& r = g.recs[i];
    bool held = false;
    for (Rec* w : g.wt)
      if (w == &r) held = true;
    if (r.blocking && r.wt_dropped && !held && r.ends.load() != 1)
      fail("a dropped waiting-thread callback was collected without ending its item", i);
  }
}

void op_setport(int v) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  push_fn("setport");
  int nargs = 1;
  bool ok = false;
  lua_Integer port = 0;
  switch (v % 16) {
    case 0: nargs = 0; break;
    case 1: lua_pushinteger(L, -1); break;
    case 2: lua_pushinteger(L, 65536); break;
    case 3: lua_pushnumber(L, 1.5); break;
    case 4: lua_pushnumber(L, std::nan("")); break;
    case 5: lua_pushliteral(L, "50123"); break;
    case 6: lua_pushnumber(L, 1e300); break;
    case 7: lua_pushnumber(L, HUGE_VAL); break;
    case 8: lua_pushinteger(L, LUA_MININTEGER); break;
    case 9: lua_pushinteger(L, 0); ok = true; break;
    case 10: lua_pushnumber(L, 0.0); ok = true; break;
    case 11: lua_pushinteger(L, 50123); ok = true; port = 50123; break;
    case 12: lua_pushinteger(L, 65535); ok = true; port = 65535; break;
    case 13: lua_pushnumber(L, 50124.0); ok = true; port = 50124; break;
    case 14: lua_pushboolean(L, 1); break;
    default: lua_pushnumber(L, -0.0); ok = true; break;
  }
  push_fn("getport");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("getport raised");
  lua_Integer old = lua_tointeger(L, -1);
  lua_pop(L, 1);
  int status = lua_pcall(L, nargs, 1, 0);
  if (ok) CHECK(status == LUA_OK && lua_tointeger(L, -1) == 1, v % 16);
  else CHECK(status != LUA_OK, v % 16);
  lua_settop(L, top);
  push_fn("getport");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("getport raised");
  lua_Integer now = lua_tointeger(L, -1);
  CHECK(now == (ok ? port : old), long(now));
  lua_settop(L, top);
}

int reopen_module(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  lua_setfield(L, -2, "darksidesync");
  lua_pop(L, 1);
  luaL_requiref(L, "darksidesync", luaopen_darksidesync, 0);
  return 1;
}

void op_require_again() {
  lua_State* L = g.L;
  lua_pushcfunction(L, reopen_module);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("require again raised");
  lua_pop(L, 1);
  DSS_api_1v0_t* api = g.api;
  find_api();
  CHECK(api == g.api);
}

void op_reg(int arg) {
  int s = arg % NSLOTS;
  Slot& sl = g.slots[s];
  int err = 0;
  if ((arg >> 2) % 8 == 7) {  // NULL cancel
    void* u = g.api->reg(g.L, &libids[s], nullptr, &err);
    CHECK(u == nullptr && err == DSS_ERR_NO_CANCEL_PROVIDED, err);
    return;
  }
  bool null_err = (arg >> 5) & 1;
  void* u = g.api->reg(g.L, &libids[s], cancelcb, null_err ? nullptr : &err);
  std::uintptr_t id = reinterpret_cast<std::uintptr_t>(u);
  if (sl.utilid) {
    CHECK(id == sl.utilid, long(id), long(sl.utilid));
    if (!null_err) CHECK(err == DSS_ERR_ALREADY_REGISTERED, err);
  } else {
    CHECK(id != 0);
    if (!null_err) CHECK(err == DSS_SUCCESS, err);
    for (int i = 0; i < g.nstale; ++i) CHECK(g.stale[i] != id, long(id));
    for (const Slot& o : g.slots) CHECK(o.utilid != id, long(id));
    sl.utilid = id;
    sl.cmode = (arg >> 2) & 3;
  }
}

void op_getutilid(int arg) {
  int s = arg % NSLOTS;
  int err = 0;
  void* u = g.api->getutilid(g.L, &libids[s], &err);
  std::uintptr_t id = reinterpret_cast<std::uintptr_t>(u);
  if (g.slots[s].utilid) {
    CHECK(id == g.slots[s].utilid && err == DSS_SUCCESS, err);
  } else {
    CHECK(id == 0 && err == DSS_ERR_UNKNOWN_LIB, err);
  }
}

void op_unreg(int arg) {
  int s = arg % NSLOTS;
  if ((arg >> 2) & 1 || !g.slots[s].utilid) {
    std::uintptr_t id = pick_target(arg >> 3);
    int rc = g.api->unreg(reinterpret_cast<void*>(id));
    int ls = slot_of(id);
    if (ls >= 0) {
      CHECK(rc == DSS_SUCCESS, rc);
      make_stale(ls);
    } else {
      CHECK(rc == DSS_ERR_INVALID_UTILID, rc);
    }
    return;
  }
  std::uintptr_t id = g.slots[s].utilid;
  int rc = g.api->unreg(reinterpret_cast<void*>(id));
  CHECK(rc == DSS_SUCCESS, rc);
  make_stale(s);
  // Every item of that id has ended (queued ones cancelled, pending ones
  // cancelled, their producers released).
  for (int i = 0; i < g.nrecs; ++i) {
    Rec& r = g.recs[i];
    bool in = r.blocking ? r.queued_seen.load() : r.accepted.load();
    if (in && r.utilid == id && r.ends.load() != 1)
      fail("item not ended after unreg", i, r.ends.load());
  }
}

enum Op {
  OP_REG, OP_REG2, OP_GETUTILID, OP_UNREG, OP_DELIVER, OP_DELIVER2,
  OP_BLOCKING, OP_BLOCKING2, OP_NULLDEC, OP_POLL, OP_POLL2, OP_WT_CALL,
  OP_WT_CALL2, OP_WT_DROP, OP_GC, OP_SETPORT, OP_QUEUESIZE, OP_WT_TOSTRING,
  OP_REQUIRE, OP_CLOSE, OP_COUNT
};

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  int byte() {
    if (!n) return 0;
    --n;
    return *p++;
  }
};

void run_op(Reader& in) {
  int op = in.byte() % OP_COUNT;
  int a = in.byte();
  if (op == OP_CLOSE) {
    close_state();
    return;
  }
  open_state();
  switch (op) {
    case OP_REG:
    case OP_REG2:
      op_reg(a);
      break;
    case OP_GETUTILID:
      op_getutilid(a);
      break;
    case OP_UNREG:
      op_unreg(a);
      break;
    case OP_DELIVER:
    case OP_DELIVER2: {
      int b = in.byte();
      deliver_ff(pick_target(a), b % D_COUNT, false);
      break;
    }
    case OP_BLOCKING:
    case OP_BLOCKING2: {
      int b = in.byte();
      deliver_blocking(pick_target(a), b % D_COUNT, (b / D_COUNT) % R_COUNT, false);
      break;
    }
    case OP_NULLDEC:
      if (a & 128) deliver_blocking(pick_target(a), D_NORMAL, R_NONE, true);
      else deliver_ff(pick_target(a), D_NORMAL, true);
      break;
    case OP_POLL:
    case OP_POLL2:
      op_poll(a);
      break;
    case OP_WT_CALL:
      call_wt(a % NWT, (a >> 3) % 3);
      break;
    case OP_WT_CALL2:
      call_wt(a % NWT, (a >> 3) % 3);
      call_wt(a % NWT, (a >> 5) % 3);
      break;
    case OP_WT_DROP:
      op_drop_wt(a % NWT);
      if (a & 8) op_gc();
      break;
    case OP_GC:
      op_gc();
      break;
    case OP_SETPORT:
      op_setport(a);
      break;
    case OP_QUEUESIZE:
      CHECK(lua_queuesize() == expected_queued(), long(lua_queuesize()),
            long(expected_queued()));
      break;
    case OP_WT_TOSTRING:
      op_wt_tostring(a % NWT);
      break;
    case OP_REQUIRE:
      op_require_again();
      break;
    default:
      break;
  }
}

void reset() {
  g.L = nullptr;
  g.api = first_api;
  g.nrecs = 0;
  g.nprods = 0;
  for (Slot& s : g.slots) s = Slot{0, 0, 0};
  g.nstale = 0;
  for (Rec*& w : g.wt) w = nullptr;
  g.last_decoded = nullptr;
  g.closing = false;
  g.cb_calls = 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reset();
  Reader in{data, size};
  int ops = 0;
  while (in.n && ops++ < 256) run_op(in);
  close_state();
  join_producers();
  for (int i = 0; i < g.nrecs; ++i) {
    Rec& r = g.recs[i];
    int want = r.accepted.load() ? 1 : 0;
    if (r.ends.load() != want) fail("item end count at the end of the input", i, r.ends.load());
  }
  return 0;
}
