// fuzz_dss.cpp -- libFuzzer target: the DSS API 1v0 and 2v0 (C ABI, found
// through the registry as a client would) and the Lua API of darksidesync,
// driven by the input bytes, with invariants checked as it goes.
//
// Encoding: the input is a sequence of operations. Each operation is one
// opcode byte (taken modulo OP_COUNT) followed by one to three argument bytes
// (missing bytes read as 0). See the `switch` in run_op for what each does.
// Opcodes 0..19 are the 1v0 set; 20 and up came with 2v0 (their numbers
// never change: add new ones at the end, and re-encode the corpus and the
// regressions if OP_COUNT changes -- see tests/fuzz/regressions/README.md).
//
// The model: the harness is the only consumer (one Lua thread), so it knows
// at every moment which items are queued, in which order, and what each
// operation must return. Invariants (any violation: a message on stderr and
// abort(), which libFuzzer reports as a crash with the input):
//   - every accepted item ends exactly once (decoder of a fire-and-forget
//     item, decoder returning 0 / raising, return callback called / garbage /
//     cancelled / its producer's timeout); a rejected item is never seen by
//     any callback; a timeout ends the item on its producer's thread;
//   - items are decoded in FIFO order (poll and dispatch);
//   - a blocking producer returns only after its item ended, with the code
//     that says how it ended (2v0: CANCELLED, TIMEOUT), and every producer is
//     released by the end of the input (bounded wait);
//   - return codes of reg / getutilid / deliver / deliver2 / queued / unreg
//     as documented, in the documented order of checks (dead id, NULL
//     decoder, bad flags, full queue: NOWAIT or timeout 0 -> QUEUE_FULL,
//     timeout -> TIMEOUT; a delivery that would wait from inside a decoder
//     -> WOULD_DEADLOCK);
//   - queuesize(), poll()'s `remaining`, queued(utilid), wait(0), the wake-up
//     fd's readability and every field of stats() equal the model's;
//   - dispatch([max]) runs exactly min(max, queued) items (fewer when one
//     raises with no handler), returns that count, hands each error to the
//     handler set by seterrorhandler exactly once;
//   - setport accepts exactly the integers 0..65535 and the modes "each" and
//     "coalesce"; setmaxqueue, dispatch and wait reject bad arguments;
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

#include <poll.h>

#include <atomic>
#include <chrono>
#include <climits>
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
constexpr int MAX_LOG = 1024;
constexpr auto BOUND = std::chrono::seconds(5);

enum DecodeMode { D_NORMAL, D_ZERO, D_RAISE, D_OVER, D_UNREG, D_DELIVER, D_COUNT };
enum ReturnMode { R_NONE, R_ONE, R_RAISE, R_OVER, R_ECHO, R_COUNT };
// How an item ended.
enum How { H_NONE, H_FF, H_DEC0, H_RET, H_GARBAGE, H_CANCEL, H_TIMEOUT_Q, H_TIMEOUT_P };
// The error handler dispatch hands errors to.
enum Handler { EH_NONE, EH_COUNT, EH_RAISE };

struct Rec {
  std::uintptr_t utilid;
  bool blocking;
  bool cbraise;  // its Lua callback raises
  int dmode;
  int rmode;
  std::atomic<int> ends;
  std::atomic<int> decoded;   // decoder called with a Lua state
  std::atomic<int> how;
  std::atomic<bool> accepted;
  std::atomic<bool> queued_seen;  // blocking: seen in the queue
  std::uint64_t seq;              // queue order, 0: never queued
  bool wt_dropped;
};

struct Producer {
  std::thread th;
  std::atomic<bool> done;
  int rc;
  Rec* rec;
  bool expect_ok;
  bool null_decoder;
  bool v2;
  bool timed;  // finite timeout: checked by the main thread
  unsigned flags;
  long timeout;
};

struct Slot {
  std::uintptr_t utilid;  // 0: not registered
  int cmode;              // cancel: bit 0 unreg itself, bit 1 try to deliver
  int cancels;
};

// What stats() must say (this state only).
struct Model {
  std::atomic<std::uint64_t> delivered, decoded, returned, cancelled, timedout,
      rejected, notified;
  std::uint64_t maxqueued;
};

struct Ctx {
  lua_State* L;
  DSS_api_1v0_t* api;
  DSS_api_2v0_t* api2;
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
  // 2v0
  Model m;
  std::uint64_t next_seq;
  std::size_t maxq;   // setmaxqueue
  int port;
  bool coalesce;
  int fd;             // the wake-up fd, -1 until made
  int handler;        // Handler
  int handler_calls;
  bool in_drain;      // inside poll or dispatch (the deadlock guard applies)
  bool stash_wt;      // dispatch: the callback keeps its waiting-thread callback
  int next_stash;
  Rec* log[MAX_LOG];  // decoded with L, in order, during one dispatch
  int nlog;
};

Ctx g;
char libids[NSLOTS];
DSS_api_1v0_t* first_api = nullptr;
DSS_api_2v0_t* first_api2 = nullptr;
// The item this producer thread is delivering: a NULL-L callback for it on
// this thread is its timeout.
thread_local Rec* t_delivering = nullptr;

// --- model ----------------------------------------------------------------

void end_item(Rec* r, int how) {
  int prev = r->ends.fetch_add(1);
  if (prev != 0) fail("item ended twice", long(r - g.recs), prev + 1);
  r->how.store(how);
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

bool in_queue(const Rec& r) {
  bool in = r.blocking ? r.queued_seen.load() : r.accepted.load();
  return in && r.decoded.load() == 0 && r.ends.load() == 0;
}

std::size_t expected_queued() {
  std::size_t n = 0;
  for (int i = 0; i < g.nrecs; ++i)
    if (in_queue(g.recs[i])) ++n;
  return n;
}

std::size_t expected_queued_of(std::uintptr_t id) {
  std::size_t n = 0;
  for (int i = 0; i < g.nrecs; ++i)
    if (g.recs[i].utilid == id && in_queue(g.recs[i])) ++n;
  return n;
}

bool model_full() { return g.maxq > 0 && expected_queued() >= g.maxq; }

// The model learns that r was queued; `before` is the queue count before.
void on_queued(Rec* r, std::size_t before) {
  r->seq = ++g.next_seq;
  g.m.delivered++;
  if (before + 1 > g.m.maxqueued) g.m.maxqueued = before + 1;
  bool transition = before == 0;
  if (g.port && (transition || !g.coalesce)) g.m.notified++;
  if (g.fd >= 0 && transition) g.m.notified++;
}

Rec* new_rec(std::uintptr_t utilid, bool blocking, int dmode, int rmode) {
  if (g.nrecs >= MAX_RECS) return nullptr;
  Rec* r = &g.recs[g.nrecs++];
  r->utilid = utilid;
  r->blocking = blocking;
  r->cbraise = false;
  r->dmode = dmode;
  r->rmode = rmode;
  r->ends.store(0);
  r->decoded.store(0);
  r->how.store(H_NONE);
  r->accepted.store(false);
  r->queued_seen.store(false);
  r->seq = 0;
  r->wt_dropped = false;
  return r;
}

// --- client callbacks -------------------------------------------------------

// The Lua callback: cb(idx, "fuzz"), or cb(wt, idx, "fuzz").
int lua_cb(lua_State* L) {
  ++g.cb_calls;
  int i = lua_type(L, 1) == LUA_TUSERDATA ? 2 : 1;
  lua_Integer idx = lua_tointeger(L, i);
  CHECK(idx >= 0 && idx < g.nrecs, long(idx));
  Rec* r = &g.recs[idx];
  if (i == 2 && g.stash_wt) {  // keep the waiting-thread callback, as poll's caller does
    int k = g.next_stash++ % NWT;
    if (g.wt[k]) g.wt[k]->wt_dropped = true;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g.wtref);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, k + 1);
    lua_pop(L, 1);
    g.wt[k] = r;
  }
  if (r->cbraise) return luaL_error(L, "fuzz callback error");
  return 0;
}

int decoder(lua_State* L, void* data, void* utilid);
int retcb(lua_State* L, void* data, void* utilid, int garbage);

void deliver_ff(std::uintptr_t id, int dmode, bool null_decoder);
void deliver2_ff(std::uintptr_t id, int dmode, bool null_decoder, unsigned flags,
                 long timeout);

// From inside a decoder (the Lua thread, inside poll or dispatch): a
// delivery that would wait fails with WOULD_DEADLOCK.
void deliver_from_decoder(Rec* r) {
  void* utilid = reinterpret_cast<void*>(r->utilid);
  bool live = is_live(r->utilid);
  // A fire-and-forget item (1v0: waits for room when the queue is full).
  deliver_ff(r->utilid, D_NORMAL, false);
  // Fire and forget with NOWAIT (2v0).
  deliver2_ff(r->utilid, D_NORMAL, false, DSS_DELIVER_NOWAIT, DSS_TIMEOUT_INFINITE);
  // Blocking ones, 1v0 and 2v0: never queued.
  Rec* b = new_rec(r->utilid, true, D_NORMAL, R_NONE);
  if (!b) return;
  int rc = g.api->deliver(utilid, decoder, retcb, b);
  CHECK(rc == (live ? DSS_ERR_WOULD_DEADLOCK : DSS_ERR_INVALID_UTILID), rc);
  rc = g.api2->deliver2(utilid, decoder, retcb, b, 0, 1000);
  CHECK(rc == (live ? DSS_ERR_WOULD_DEADLOCK : DSS_ERR_INVALID_UTILID), rc);
}

int decoder(lua_State* L, void* data, void* utilid) {
  Rec* r = static_cast<Rec*>(data);
  if (reinterpret_cast<std::uintptr_t>(utilid) != r->utilid)
    fail("decoder got another utilid", long(r - g.recs));
  if (!L) {  // cancelled while queued, or its producer's timeout
    if (r == t_delivering) {
      CHECK(r->blocking);
      g.m.timedout++;
      end_item(r, H_TIMEOUT_Q);
    } else {
      g.m.cancelled++;
      end_item(r, H_CANCEL);
    }
    return 0;
  }
  if (r->decoded.load() != 0) fail("decoded twice", long(r - g.recs));
  // FIFO: nothing queued before it is still queued.
  CHECK(in_queue(*r), long(r - g.recs));
  for (int i = 0; i < g.nrecs; ++i)
    if (&g.recs[i] != r && in_queue(g.recs[i]) && g.recs[i].seq < r->seq)
      fail("decoded out of order", long(r - g.recs), i);
  r->decoded.fetch_add(1);
  g.m.decoded++;
  if (g.closing) fail("decoder ran with L during close");
  CHECK(g.in_drain);
  g.last_decoded = r;
  if (g.nlog < MAX_LOG) g.log[g.nlog++] = r;
  switch (r->dmode) {
    case D_ZERO:
      end_item(r, H_DEC0);
      return 0;
    case D_RAISE:
      end_item(r, H_DEC0);
      luaL_error(L, "fuzz decoder error");
      return 0;
    case D_OVER:
      end_item(r, H_DEC0);
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
      deliver_from_decoder(r);
      break;
    default:
      break;
  }
  if (!r->blocking) end_item(r, H_FF);
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
  if (!L) {
    if (r == t_delivering) {
      g.m.timedout++;
      end_item(r, H_TIMEOUT_P);
    } else {
      g.m.cancelled++;
      end_item(r, H_CANCEL);
    }
    return 0;
  }
  g.m.returned++;
  end_item(r, garbage ? H_GARBAGE : H_RET);
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
      rc = g.api2->deliver2(utilid, decoder, nullptr, r, DSS_DELIVER_NOWAIT, 0);
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
  lua_getfield(L, -2, DSS_API_2v0_KEY);
  CHECK(lua_islightuserdata(L, -1));
  g.api2 = static_cast<DSS_api_2v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 3);
  CHECK(g.api && std::strcmp(g.api->version, DSS_API_1v0_KEY) == 0);
  CHECK(g.api2 && std::strcmp(g.api2->version, DSS_API_2v0_KEY) == 0);
  if (!first_api) first_api = g.api;
  if (!first_api2) first_api2 = g.api2;
  CHECK(first_api == g.api);  // valid for the life of the process
  CHECK(first_api2 == g.api2);
}

void reset_model() {
  g.m.delivered = 0;
  g.m.decoded = 0;
  g.m.returned = 0;
  g.m.cancelled = 0;
  g.m.timedout = 0;
  g.m.rejected = 0;
  g.m.notified = 0;
  g.m.maxqueued = 0;
  g.maxq = 0;
  g.port = 0;
  g.coalesce = false;
  g.fd = -1;
  g.handler = EH_NONE;
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
  reset_model();
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

// Checks that the last pcall raised a message containing `part`.
void check_error(int status, const char* part) {
  CHECK(status != LUA_OK);
  const char* msg = lua_tostring(g.L, -1);
  if (!msg || !std::strstr(msg, part)) {
    std::fprintf(stderr, "fuzz_dss: error '%s', expected '%s'\n", msg ? msg : "(not a string)",
                 part);
    fail("wrong error message");
  }
}

void wait_done(Producer& p, std::chrono::milliseconds extra = std::chrono::milliseconds(0)) {
  auto deadline = std::chrono::steady_clock::now() + BOUND + extra;
  while (!p.done.load()) {
    if (std::chrono::steady_clock::now() > deadline)
      fail("a blocked producer was never released", long(&p - g.prods),
           long(p.rec - g.recs));
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void join_producers() {
  for (int i = 0; i < g.nprods; ++i) {
    wait_done(g.prods[i]);
    g.prods[i].th.join();
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
      CHECK(g.api2->queued(reinterpret_cast<void*>(live[i])) == DSS_ERR_INVALID_UTILID);
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

// 1v0 fire and forget, from the main thread or a decoder.
void deliver_ff(std::uintptr_t id, int dmode, bool null_decoder) {
  bool live = is_live(id);
  bool full = model_full();
  // 1v0 waits for room: never from the main thread (nobody would make it).
  if (live && !null_decoder && full && !g.in_drain) return;
  Rec* r = new_rec(id, false, dmode, R_NONE);
  if (!r) return;
  std::size_t before = expected_queued();
  int rc = g.api->deliver(reinterpret_cast<void*>(id),
                          null_decoder ? nullptr : decoder, nullptr, r);
  if (null_decoder) {
    if (live) CHECK(rc == DSS_ERR_NO_DECODE_PROVIDED, rc);
    else CHECK(rc == DSS_ERR_INVALID_UTILID, rc);
    return;
  }
  if (!live) {
    CHECK(rc == DSS_ERR_INVALID_UTILID, rc, long(id));
  } else if (full) {  // inside a decoder: it would wait for this very thread
    CHECK(rc == DSS_ERR_WOULD_DEADLOCK, rc);
  } else {
    CHECK(rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED, rc);
    r->accepted.store(true);
    on_queued(r, before);
  }
}

// 2v0 fire and forget, from the main thread or a decoder.
void deliver2_ff(std::uintptr_t id, int dmode, bool null_decoder, unsigned flags,
                 long timeout) {
  bool live = is_live(id);
  bool bad_flags = (flags & ~unsigned(DSS_DELIVER_NOWAIT)) != 0;
  bool full = model_full();
  bool nowait = (flags & DSS_DELIVER_NOWAIT) || timeout == 0;
  if (live && !null_decoder && !bad_flags && full && !nowait && timeout < 0 && !g.in_drain)
    return;  // would wait for room forever
  Rec* r = new_rec(id, false, dmode, R_NONE);
  if (!r) return;
  std::size_t before = expected_queued();
  auto t0 = std::chrono::steady_clock::now();
  int rc = g.api2->deliver2(reinterpret_cast<void*>(id), null_decoder ? nullptr : decoder,
                            nullptr, r, flags, timeout);
  auto took = std::chrono::steady_clock::now() - t0;
  int want;
  if (!live) want = DSS_ERR_INVALID_UTILID;
  else if (null_decoder) want = DSS_ERR_NO_DECODE_PROVIDED;
  else if (bad_flags) want = DSS_ERR_INVALID_ARGUMENT;
  else if (!full) want = DSS_SUCCESS;
  else if (g.in_drain && !nowait) want = DSS_ERR_WOULD_DEADLOCK;
  else if (nowait) want = DSS_ERR_QUEUE_FULL;
  else want = DSS_ERR_TIMEOUT;
  if (want == DSS_SUCCESS) {
    CHECK(rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED, rc);
    r->accepted.store(true);
    on_queued(r, before);
    return;
  }
  if (rc != want) fail("deliver2 (fire and forget) returned the wrong code", rc, want);
  if (rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT) g.m.rejected++;
  if (rc == DSS_ERR_TIMEOUT)
    CHECK(took >= std::chrono::milliseconds(timeout),
          long(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
}

int blocked_count() {
  int blocked = 0;
  for (int i = 0; i < g.nprods; ++i)
    if (!g.prods[i].done.load()) ++blocked;
  return blocked;
}

// The code a released blocking producer must see, from how its item ended.
bool rc_matches(const Producer& p, int rc, int how) {
  if (p.v2 && how == H_CANCEL) return rc == DSS_ERR_CANCELLED;
  if (how == H_TIMEOUT_Q || how == H_TIMEOUT_P) return p.v2 && rc == DSS_ERR_TIMEOUT;
  return how != H_NONE && (rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED);
}

// A blocking delivery on a producer thread: 1v0 deliver, or 2v0 deliver2
// with flags and a timeout. With a finite timeout the whole cycle happens
// within this operation (optionally with one poll while it waits), so that
// the model stays exact.
void deliver_blocking(std::uintptr_t id, int dmode, int rmode, bool null_decoder,
                      bool v2 = false, unsigned flags = 0, long timeout = -1,
                      bool poll_first = false, int wt_slot = 0) {
  if (g.nprods >= MAX_PRODUCERS) return;
  if (blocked_count() >= MAX_BLOCKED) return;
  bool live = is_live(id);
  bool bad_flags = v2 && (flags & ~unsigned(DSS_DELIVER_NOWAIT)) != 0;
  bool timed = v2 && timeout >= 0;
  bool full = model_full();
  bool nowait = v2 && ((flags & DSS_DELIVER_NOWAIT) || timeout == 0);
  // It would wait for room until something else happens: not modelled.
  if (live && !null_decoder && !bad_flags && full && !nowait && !timed) return;
  Rec* r = new_rec(id, true, dmode, rmode);
  if (!r) return;
  std::size_t before = g.L ? lua_queuesize() : 0;
  CHECK(before == expected_queued(), long(before));
  Producer& p = g.prods[g.nprods++];
  p.done.store(false);
  p.rc = 0;
  p.rec = r;
  p.expect_ok = live && !null_decoder && !bad_flags && !full;
  p.null_decoder = null_decoder;
  p.v2 = v2;
  p.timed = timed;
  p.flags = flags;
  p.timeout = timeout;
  Producer* pp = &p;
  DSS_api_1v0_t* api = g.api;
  DSS_api_2v0_t* api2 = g.api2;
  auto t0 = std::chrono::steady_clock::now();
  p.th = std::thread([pp, api, api2] {
    Rec* rr = pp->rec;
    DSS_decoder_1v0_t dec = pp->null_decoder ? nullptr : decoder;
    t_delivering = rr;
    int rc = pp->v2 ? api2->deliver2(reinterpret_cast<void*>(rr->utilid), dec, retcb, rr,
                                     pp->flags, pp->timeout)
                    : api->deliver(reinterpret_cast<void*>(rr->utilid), dec, retcb, rr);
    t_delivering = nullptr;
    pp->rc = rc;
    if (pp->expect_ok && !pp->timed) {
      if (rr->ends.load() != 1)
        fail("blocking producer released before its item ended",
             long(rr - g.recs), rr->ends.load());
      if (!rc_matches(*pp, rc, rr->how.load()))
        fail("blocking deliver returned the wrong code for how its item ended", rc,
             rr->how.load());
      rr->accepted.store(true);
    }
    pp->done.store(true);
  });
  auto deadline = std::chrono::steady_clock::now() + BOUND;
  if (!p.expect_ok) {
    // Refused (at once, or after its timeout waiting for room); wait for
    // it, so that the id cannot become live (a later reg) before the
    // producer has handed it in.
    wait_done(p, std::chrono::milliseconds(timed ? timeout : 0));
    int rc = p.rc;
    int want;
    if (!live) want = DSS_ERR_INVALID_UTILID;
    else if (null_decoder) want = DSS_ERR_NO_DECODE_PROVIDED;
    else if (bad_flags) want = DSS_ERR_INVALID_ARGUMENT;
    else if (nowait) want = DSS_ERR_QUEUE_FULL;
    else want = DSS_ERR_TIMEOUT;
    if (rc != want) fail("blocking deliver refused with the wrong code", rc, want);
    if (rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT) g.m.rejected++;
    if (rc == DSS_ERR_TIMEOUT)
      CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(timeout));
    CHECK(r->ends.load() == 0 && r->decoded.load() == 0);
    return;
  }
  // Wait until it is queued (or, with a tiny timeout, already over), so the
  // model stays exact.
  for (;;) {
    if (lua_queuesize() > before) break;
    if (p.done.load()) {
      if (!timed) fail("blocking deliver returned before being served");
      break;
    }
    if (std::chrono::steady_clock::now() > deadline)
      fail("blocking deliver never queued");
    std::this_thread::yield();
  }
  r->queued_seen.store(true);
  on_queued(r, before);
  if (!timed) return;
  // Its timeout runs out now: while it is queued, or (poll_first, when it
  // is the only item) while Lua holds its waiting-thread callback.
  if (poll_first && before == 0) {
    lua_State* L = g.L;
    int top = lua_gettop(L);
    g.last_decoded = nullptr;
    push_fn("poll");
    g.in_drain = true;
    int status = lua_pcall(L, 0, LUA_MULTRET, 0);
    g.in_drain = false;
    CHECK(status == LUA_OK, status);
    int nres = lua_gettop(L) - top;
    if (g.last_decoded != r) {
      CHECK(g.last_decoded == nullptr);
      CHECK(nres == 1 && lua_tointeger(L, -1) == -1, nres);  // it timed out first
    } else if (nres == 3) {
      lua_rawgeti(L, top + 3, 1);
      CHECK(lua_type(L, -1) == LUA_TUSERDATA);
      int k = wt_slot % NWT;
      if (g.wt[k]) g.wt[k]->wt_dropped = true;
      lua_rawgeti(L, LUA_REGISTRYINDEX, g.wtref);
      lua_insert(L, -2);
      lua_rawseti(L, -2, k + 1);
      lua_pop(L, 1);
      g.wt[k] = r;
    } else {
      CHECK(nres == 1 && r->dmode == D_ZERO, nres, r->dmode);
    }
    lua_settop(L, top);
  }
  wait_done(p, std::chrono::milliseconds(timeout));
  int how = r->how.load();
  CHECK(r->ends.load() == 1, r->ends.load());
  if (!rc_matches(p, p.rc, how)) fail("deliver2 with a timeout: wrong code", p.rc, how);
  if (how == H_TIMEOUT_Q || how == H_TIMEOUT_P)
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(timeout));
  r->accepted.store(true);
}

void op_poll(int arg) {
  lua_State* L = g.L;
  std::size_t before = expected_queued();
  int top = lua_gettop(L);
  g.last_decoded = nullptr;
  push_fn("poll");
  g.in_drain = true;
  int status = lua_pcall(L, 0, LUA_MULTRET, 0);
  g.in_drain = false;
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
    int st = lua_pcall(L, n, 0, 0);
    if (r->cbraise) check_error(st, "fuzz callback error");
    else if (st != LUA_OK) fail("callback raised");
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

lua_Integer lua_getport() {
  push_fn("getport");
  if (lua_pcall(g.L, 0, 1, 0) != LUA_OK) fail("getport raised");
  lua_Integer port = lua_tointeger(g.L, -1);
  lua_pop(g.L, 1);
  return port;
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
    case 5: lua_pushliteral(L, "50123"); ok = true; port = 50123; break;  // as Lua
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
  lua_Integer old = lua_getport();
  int status = lua_pcall(L, nargs, 1, 0);
  if (ok) CHECK(status == LUA_OK && lua_tointeger(L, -1) == 1, v % 16);
  else CHECK(status != LUA_OK, v % 16);
  lua_settop(L, top);
  lua_Integer now = lua_getport();
  CHECK(now == (ok ? port : old), long(now));
  if (ok) {
    g.port = int(port);
    g.coalesce = false;  // the default mode, "each"
  }
}

// setport(port, mode)
void op_setport2(int v) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  push_fn("setport");
  int nargs = 2;
  bool ok = false, co = false;
  lua_Integer port = 50125 + v % 3;
  const char* err = "invalid option";
  switch ((v / 3) % 14) {
    case 0: lua_pushinteger(L, port); lua_pushliteral(L, "each"); ok = true; break;
    case 1: lua_pushinteger(L, port); lua_pushliteral(L, "coalesce"); ok = co = true; break;
    case 2: port = 0; lua_pushinteger(L, 0); lua_pushliteral(L, "coalesce"); ok = co = true; break;
    case 3: lua_pushinteger(L, port); lua_pushliteral(L, "bogus"); err = "(invalid option 'bogus')"; break;
    case 4: lua_pushinteger(L, port); lua_pushinteger(L, 1); err = "(invalid option '1')"; break;
    case 5: lua_pushinteger(L, port); lua_pushnil(L); ok = true; break;
    case 6: lua_pushinteger(L, port); lua_pushliteral(L, ""); err = "(invalid option '')"; break;
    case 7: lua_pushinteger(L, port); lua_pushliteral(L, "EACH"); err = "(invalid option 'EACH')"; break;
    case 8: lua_pushinteger(L, -1); lua_pushliteral(L, "each"); err = "port must be an integer"; break;
    case 9: lua_pushliteral(L, "x"); lua_pushliteral(L, "coalesce"); err = "port number expected"; break;
    case 10: lua_pushinteger(L, port); lua_pushboolean(L, 1); err = "bad argument #2"; break;
    case 11: lua_pushinteger(L, port); lua_pushliteral(L, "coalesce"); lua_pushliteral(L, "x");
             nargs = 3; ok = co = true; break;
    case 12: lua_pushinteger(L, port); lua_newtable(L); err = "bad argument #2"; break;
    default: port = 0; lua_pushinteger(L, 0); lua_pushliteral(L, "each"); ok = true; break;
  }
  lua_Integer old = lua_getport();
  int status = lua_pcall(L, nargs, 1, 0);
  if (ok) CHECK(status == LUA_OK && lua_tointeger(L, -1) == 1, (v / 3) % 14);
  else check_error(status, err);
  lua_settop(L, top);
  lua_Integer now = lua_getport();
  CHECK(now == (ok ? port : old), long(now), long(port));
  if (ok) {
    g.port = int(port);
    g.coalesce = co;
  }
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

// --- 2v0 operations -------------------------------------------------------------

const unsigned FLAGS[] = {0, DSS_DELIVER_NOWAIT, 0x2u, DSS_DELIVER_NOWAIT | 0x4u,
                          0x80000000u, 0};
const long TIMEOUTS[] = {DSS_TIMEOUT_INFINITE, 0, 1, 3, -100, LONG_MIN, 5};

void op_deliver2_ff(int a, int b, int c) {
  Rec* before_last = g.nrecs ? &g.recs[g.nrecs - 1] : nullptr;
  deliver2_ff(pick_target(a), b % D_COUNT, (b & 0x80) != 0, FLAGS[c % 6],
              TIMEOUTS[(c / 6) % 7]);
  Rec* r = g.nrecs ? &g.recs[g.nrecs - 1] : nullptr;
  if (r && r != before_last) r->cbraise = (b / D_COUNT) % 4 == 3;
}

void op_blocking2(int a, int b, int c) {
  static const long timeouts[] = {DSS_TIMEOUT_INFINITE, 0, 1, 2, 5, 20, -3, DSS_TIMEOUT_INFINITE};
  int dmode = b % D_COUNT;
  long timeout = timeouts[c % 8];
  if (timeout >= 0 && dmode != D_NORMAL) dmode = D_ZERO;  // with a timeout: these two
  deliver_blocking(pick_target(a), dmode, (b / D_COUNT) % R_COUNT, (c & 0x80) != 0, true,
                   FLAGS[(c / 8) % 6], timeout, (c / 48) % 2 == 0, b);
}

void op_queued(int a) {
  std::uintptr_t id = pick_target(a);
  long n = g.api2->queued(reinterpret_cast<void*>(id));
  if (is_live(id)) CHECK(n == long(expected_queued_of(id)), n, long(expected_queued_of(id)));
  else CHECK(n == DSS_ERR_INVALID_UTILID, n);
}

void op_setmaxqueue(int a) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  push_fn("setmaxqueue");
  long v = -1;  // -1: a bad argument
  int nargs = 1;
  switch (a % 12) {
    case 0: lua_pushinteger(L, 0); v = 0; break;
    case 1: lua_pushinteger(L, 1); v = 1; break;
    case 2: lua_pushinteger(L, 2); v = 2; break;
    case 3: lua_pushnumber(L, 3.0); v = 3; break;
    case 4: lua_pushinteger(L, 5); v = 5; break;
    case 5: lua_pushinteger(L, 1000000); v = 1000000; break;
    case 6: lua_pushinteger(L, -1); break;
    case 7: lua_pushnumber(L, 1.5); break;
    case 8: lua_pushliteral(L, "2"); v = 2; break;  // a numeric string, as Lua
    case 9: nargs = 0; break;
    case 10: lua_pushnumber(L, std::nan("")); break;
    default: lua_pushinteger(L, 1); v = 1; break;
  }
  int status = lua_pcall(L, nargs, 0, 0);
  if (v >= 0) {
    CHECK(status == LUA_OK, a % 12);
    g.maxq = std::size_t(v);
  } else {
    check_error(status, "non-negative integer expected");
  }
  lua_settop(L, top);
  push_fn("getmaxqueue");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("getmaxqueue raised");
  CHECK(std::size_t(lua_tointeger(L, -1)) == g.maxq, long(lua_tointeger(L, -1)), long(g.maxq));
  lua_settop(L, top);
}

// Whether r's decoder or callback raises when run by dispatch.
bool raises(const Rec* r) {
  if (r->dmode == D_RAISE || r->dmode == D_OVER) return true;
  return r->dmode != D_ZERO && r->cbraise;
}

void op_dispatch(int a) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  std::size_t before = expected_queued();
  push_fn("dispatch");
  int nargs = 1;
  long max = -1;  // -1: a bad argument
  switch (a % 11) {
    case 0: nargs = 0; max = long(before); break;
    case 1: lua_pushnil(L); max = long(before); break;
    case 2: lua_pushinteger(L, 0); max = 0; break;
    case 3: lua_pushinteger(L, 1); max = 1; break;
    case 4: lua_pushnumber(L, 2.0); max = 2; break;
    case 5: lua_pushinteger(L, 3); max = 3; break;
    case 6: lua_pushinteger(L, 255); max = 255; break;
    case 7: lua_pushinteger(L, -1); break;
    case 8: lua_pushnumber(L, 1.5); break;
    case 9: lua_pushliteral(L, "one"); break;
    default: lua_pushliteral(L, "1"); max = 1; break;  // a numeric string, as Lua
  }
  g.nlog = 0;
  int cb0 = g.cb_calls, h0 = g.handler_calls;
  g.stash_wt = true;
  g.in_drain = true;
  int status = lua_pcall(L, nargs, 1, 0);
  g.in_drain = false;
  g.stash_wt = false;
  if (max < 0) {
    check_error(status, "non-negative integer expected");
    CHECK(g.nlog == 0, g.nlog);
    lua_settop(L, top);
    return;
  }
  CHECK(g.nlog < MAX_LOG);
  int errors = 0, pushed = 0;
  for (int i = 0; i < g.nlog; ++i) {
    if (raises(g.log[i])) ++errors;
    int dm = g.log[i]->dmode;
    if (dm != D_ZERO && dm != D_RAISE && dm != D_OVER) ++pushed;
    CHECK(g.log[i]->ends.load() == 1 || g.log[i]->blocking, i);
  }
  CHECK(g.cb_calls - cb0 == pushed, g.cb_calls - cb0, pushed);
  CHECK(g.nlog <= max, g.nlog, max);
  if (status == LUA_OK) {
    CHECK(lua_tointeger(L, -1) == g.nlog, long(lua_tointeger(L, -1)), g.nlog);
    // It stopped because it ran max, or the queue is empty.
    CHECK(g.nlog == max || expected_queued() == 0, g.nlog, long(expected_queued()));
    if (g.handler == EH_COUNT) CHECK(g.handler_calls - h0 == errors, g.handler_calls - h0, errors);
    else CHECK(errors == 0, errors, g.handler);
  } else {
    // An error with no handler (or a handler that raised): it stopped at
    // the item that raised.
    CHECK(g.handler != EH_COUNT);
    CHECK(g.nlog >= 1 && errors == 1 && raises(g.log[g.nlog - 1]), g.nlog, errors);
    if (g.handler == EH_RAISE) {
      CHECK(g.handler_calls - h0 == 1, g.handler_calls - h0);
      check_error(status, "fuzz handler error");
    } else {
      const Rec* r = g.log[g.nlog - 1];
      check_error(status, r->dmode == D_RAISE  ? "fuzz decoder error"
                          : r->dmode == D_OVER ? "but pushed 1 value(s)"
                                               : "fuzz callback error");
    }
  }
  lua_settop(L, top);
}

int errh_count(lua_State* L) {
  ++g.handler_calls;
  const char* m = lua_tostring(L, 1);
  CHECK(m && (std::strstr(m, "fuzz") || std::strstr(m, "but pushed 1 value(s)")));
  return 0;
}

int errh_raise(lua_State* L) {
  ++g.handler_calls;
  return luaL_error(L, "fuzz handler error");
}

void op_seterrorhandler(int a) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  push_fn("seterrorhandler");
  int nargs = 1, h = -1;  // -1: a bad argument
  switch (a % 8) {
    case 0: lua_pushnil(L); h = EH_NONE; break;
    case 1: nargs = 0; h = EH_NONE; break;
    case 2: lua_pushcfunction(L, errh_count); h = EH_COUNT; break;
    case 3: lua_pushcfunction(L, errh_raise); h = EH_RAISE; break;
    case 4: lua_newtable(L); break;
    case 5: lua_pushinteger(L, 42); break;
    case 6: lua_pushliteral(L, "f"); break;
    default: lua_pushcfunction(L, errh_count); h = EH_COUNT; break;
  }
  int status = lua_pcall(L, nargs, 0, 0);
  if (h >= 0) {
    CHECK(status == LUA_OK, a % 8);
    g.handler = h;
  } else {
    check_error(status, "(function or nil expected, got ");
  }
  lua_settop(L, top);
}

void op_wait(int a) {
  lua_State* L = g.L;
  int top = lua_gettop(L);
  std::size_t q = expected_queued();
  push_fn("wait");
  int nargs = 1;
  bool bad = false;
  switch (a % 8) {
    case 0: lua_pushinteger(L, 0); break;
    case 1: lua_pushnumber(L, 0.0); break;
    case 2: lua_pushnumber(L, 0.001); break;
    case 3:  // no limit: only when something is queued
      if (q) nargs = 0;
      else lua_pushinteger(L, 0);
      break;
    case 4: lua_pushinteger(L, -1); bad = true; break;
    case 5: lua_pushliteral(L, "zero"); bad = true; break;
    case 6: lua_pushnumber(L, std::nan("")); bad = true; break;
    default: lua_pushnumber(L, q ? HUGE_VAL : 0.002); break;
  }
  int status = lua_pcall(L, nargs, 1, 0);
  if (bad) {
    check_error(status, "non-negative number of seconds expected");
  } else {
    CHECK(status == LUA_OK, a % 8);
    CHECK(std::size_t(lua_tointeger(L, -1)) == q, long(lua_tointeger(L, -1)), long(q));
  }
  lua_settop(L, top);
}

void op_getfd() {
  lua_State* L = g.L;
  push_fn("getfd");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("getfd raised");
  int fd = int(lua_tointeger(L, -1));
  lua_pop(L, 1);
  CHECK(fd >= 0, fd);
  std::size_t q = expected_queued();
  if (g.fd < 0) {
    g.fd = fd;
    if (q) g.m.notified++;  // made readable at once
  }
  CHECK(fd == g.fd, fd, g.fd);
  pollfd p = {fd, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  CHECK(r >= 0 && !(p.revents & (POLLNVAL | POLLERR)), r);
  bool readable = r > 0 && (p.revents & POLLIN);
  CHECK(readable == (q > 0), readable, long(q));
}

// Waits until every producer whose item ended has returned.
void settle_producers() {
  for (int i = 0; i < g.nprods; ++i)
    if (g.prods[i].rec->ends.load()) wait_done(g.prods[i]);
}

void op_stats() {
  lua_State* L = g.L;
  // No collection from here to the counters' read: a waiting-thread
  // callback's finalizer would end its item (H_GARBAGE) meanwhile.
  lua_gc(L, LUA_GCSTOP, 0);
  settle_producers();
  push_fn("stats");
  int st = lua_pcall(L, 0, 1, 0);
  lua_gc(L, LUA_GCRESTART, 0);
  if (st != LUA_OK) fail("stats raised");
  CHECK(lua_istable(L, -1));
  std::size_t q = expected_queued();
  const struct {
    const char* name;
    std::uint64_t want;
  } rows[] = {{"delivered", g.m.delivered.load()},
              {"decoded", g.m.decoded.load()},
              {"returned", g.m.returned.load()},
              {"cancelled", g.m.cancelled.load()},
              {"timedout", g.m.timedout.load()},
              {"rejected", g.m.rejected.load()},
              {"queued", q},
              {"maxqueued", g.m.maxqueued},
              {"blocked", std::uint64_t(blocked_count())}};
  for (const auto& r : rows) {
    lua_getfield(L, -1, r.name);
    CHECK(lua_isnumber(L, -1));
    std::uint64_t v = std::uint64_t(lua_tointeger(L, -1));
    lua_pop(L, 1);
    if (v != r.want) {
      std::fprintf(stderr, "fuzz_dss: stats().%s is %llu, the model says %llu\n", r.name,
                   static_cast<unsigned long long>(v),
                   static_cast<unsigned long long>(r.want));
      fail("stats() differs from the model");
    }
  }
  lua_pop(L, 1);
  // A blocking producer sends its datagram after its item is queued (and
  // seen by the model): wait for the count to catch up, bounded.
  auto deadline = std::chrono::steady_clock::now() + BOUND;
  for (;;) {
    push_fn("stats");
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) fail("stats raised");
    lua_getfield(L, -1, "notified");
    lua_getfield(L, -2, "notifyfailed");
    std::uint64_t sent =
        std::uint64_t(lua_tointeger(L, -2)) + std::uint64_t(lua_tointeger(L, -1));
    lua_pop(L, 3);
    if (sent == g.m.notified.load()) break;
    if (sent > g.m.notified.load() || std::chrono::steady_clock::now() > deadline)
      fail("stats(): notified + notifyfailed differ from the model", long(sent),
           long(g.m.notified.load()));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

enum Op {
  // 1v0
  OP_REG, OP_REG2, OP_GETUTILID, OP_UNREG, OP_DELIVER, OP_DELIVER2,
  OP_BLOCKING, OP_BLOCKING2, OP_NULLDEC, OP_POLL, OP_POLL2, OP_WT_CALL,
  OP_WT_CALL2, OP_WT_DROP, OP_GC, OP_SETPORT, OP_QUEUESIZE, OP_WT_TOSTRING,
  OP_REQUIRE, OP_CLOSE,
  // 2v0 (20..)
  OP_V2_FF, OP_V2_BLOCKING, OP_QUEUED, OP_SETMAXQUEUE, OP_DISPATCH, OP_WAIT,
  OP_GETFD, OP_STATS, OP_SETPORT_MODE, OP_SETERRORHANDLER, OP_V2_FF2, OP_DISPATCH2,
  OP_COUNT
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

// FUZZ_TRACE=1 in the environment: every operation on stderr.
const bool trace = std::getenv("FUZZ_TRACE") != nullptr;

void run_op(Reader& in) {
  int op = in.byte() % OP_COUNT;
  int a = in.byte();
  if (trace)
    std::fprintf(stderr, "op %d a %d (queued %zu, max %zu, handler %d)\n", op, a,
                 g.L ? expected_queued() : 0, g.maxq, g.handler);
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
      Rec* last = g.nrecs ? &g.recs[g.nrecs - 1] : nullptr;
      deliver_ff(pick_target(a), b % D_COUNT, false);
      Rec* r = g.nrecs ? &g.recs[g.nrecs - 1] : nullptr;
      if (r && r != last) r->cbraise = (b / D_COUNT) % 4 == 3;
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
    case OP_V2_FF:
    case OP_V2_FF2: {
      int b = in.byte();
      int c = in.byte();
      op_deliver2_ff(a, b, c);
      break;
    }
    case OP_V2_BLOCKING: {
      int b = in.byte();
      int c = in.byte();
      op_blocking2(a, b, c);
      break;
    }
    case OP_QUEUED:
      op_queued(a);
      break;
    case OP_SETMAXQUEUE:
      op_setmaxqueue(a);
      break;
    case OP_DISPATCH:
    case OP_DISPATCH2:
      op_dispatch(a);
      break;
    case OP_WAIT:
      op_wait(a);
      break;
    case OP_GETFD:
      op_getfd();
      break;
    case OP_STATS:
      op_stats();
      break;
    case OP_SETPORT_MODE:
      op_setport2(a);
      break;
    case OP_SETERRORHANDLER:
      op_seterrorhandler(a);
      break;
    default:
      break;
  }
}

void reset() {
  g.L = nullptr;
  g.api = first_api;
  g.api2 = first_api2;
  g.nrecs = 0;
  g.nprods = 0;
  for (Slot& s : g.slots) s = Slot{0, 0, 0};
  g.nstale = 0;
  for (Rec*& w : g.wt) w = nullptr;
  g.last_decoded = nullptr;
  g.closing = false;
  g.cb_calls = 0;
  g.next_seq = 0;
  g.handler_calls = 0;
  g.in_drain = false;
  g.stash_wt = false;
  g.next_stash = 0;
  g.nlog = 0;
  reset_model();
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
