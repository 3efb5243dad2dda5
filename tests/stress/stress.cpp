// stress.cpp -- the darksidesync stress harness.
//
// Acts as a client library would: it knows darksidesync only through
// include/darksidesync_api.h and the Lua registry, and loads the module with
// `require "darksidesync"` (package.cpath points at the built .so), so that
// loading and unloading it is real.
//
// S state threads each own a Lua state in turn: create it, require
// darksidesync, register two client "libraries", drain the queue and run the
// callbacks (answering, dropping to the GC or holding waiting-thread
// callbacks), unregister and re-register mid-flight, and close it while
// producers are blocked; then open a new one. A state drains in one of five
// ways, switched at random while it runs: poll(); dispatch([max]) with or
// without an error handler (some callbacks and decoders raise); wait(timeout)
// then dispatch(); poll(2) on getfd() then dispatch(); poll(2) on a UDP
// socket that setport(port, "each" | "coalesce") notifies, then dispatch()
// until queuesize() is 0. States also change setmaxqueue(n) (small n) at run
// time. P producer threads deliver items (fire and forget or blocking, random
// decoder and Lua-side behaviour) to whatever utilid a state currently
// publishes, racing the closes, plus stale utilids: through the 1v0 deliver,
// or the 2v0 deliver2 with DSS_DELIVER_NOWAIT or not, invalid flag bits now
// and then, and timeouts from 0 to 200 ms or none (tiny ones time out while
// the item is queued, and while Lua holds its waiting-thread callback).
//
// Every item has an id and a byte of atomic flags: how many times it ended,
// how many times it was decoded, whether deliver accepted or refused it. At
// the end: accepted items must have ended exactly once (lost / doubled),
// refused ones never seen by a callback. An item ended by its producer's
// timeout ends on the producer's own thread, inside deliver2 (the harness
// checks that). A watchdog fails the run when a producer stays inside deliver
// too long (hung); deliver2 must return within its timeout (plus slack).
//
// Exact checks as it goes: dispatch() returns how many decoders ran; wait()
// returning 0 waited its timeout; the wake-up fd and the coalesced datagram
// are never missing while items are queued; the queue never grows above a
// limit it was seen under; every error raised reaches the handler or the
// caller exactly once; a blocking delivery from a decoder (the Lua thread
// inside poll or dispatch) returns DSS_ERR_WOULD_DEADLOCK.
//
// Half the states end with a quiet moment: the state unregisters its
// libraries (no producer can reach it any more), waits until no producer is
// inside a delivery of its items, and checks stats() against the harness's
// own per-state counts (delivered, decoded, returned, cancelled, timedout,
// rejected exactly; queued == blocked == 0; delivered == decoded + cancelled
// while queued + timed out while queued), that the wake-up fd is not
// readable; then delivers n items itself with DSS_DELIVER_NOWAIT into the
// empty bounded queue (exactly min(n, limit) accepted, the rest QUEUE_FULL;
// timeout 0 -> QUEUE_FULL, 1 ms -> TIMEOUT), checks queued(utilid),
// queuesize(), stats().queued, wait(0) and the fd's readability against that
// count, dispatches them (dispatch() returns the count) and checks again.
//
// Repeatedly, the run goes through moments when every state is closed (so
// Lua has dlclosed darksidesync.so): then the module must still be mapped
// (it pins itself), every producer blocked before must have been released,
// and deliveries with stale utilids, through the API struct pointer obtained
// earlier, must return DSS_ERR_INVALID_UTILID.
//
// Every registration has a record (RegRec). Its client's cancel must be
// called at most once, exactly once if nobody unregistered it before
// lua_close returned, and never if an unreg of it returned before lua_close
// was called; once lua_close returns its utilid is gone (queued() says
// INVALID_UTILID) and every producer that delivered to the state comes out
// of deliver (bounded wait: else hung).
//
// Close with a draining finalizer (--finalizer-prob): before some states are
// closed, after their last poll, the driver makes one to three objects with
// a __gc finalizer (newproxy on 5.1 and LuaJIT, a table on 5.2+), anchored
// in the registry, so lua_close runs them first (newest first, before the
// hub's closer). Each runs a plan: poll() or dispatch() (protected) until
// the queue is empty, blocking items included (the waiting-thread callback
// called, kept or dropped as the item's action says), answer held
// callbacks, or register a new client (a libid of its own) during the close,
// deliver a few items to it and publish it to the producers. Now and then
// such an object is made when the state opens instead. Every item must still
// end exactly once, every producer be released, every cancel be called as
// above (lost = doubled = hung = 0).
//
// Unreg during decode (--flood-prob): a state delivers 400 to 1600
// fire-and-forget items (more than one queue block of 340 entries) to one
// of its registrations, producers favour it meanwhile, and a helper thread
// unregisters it once the Lua thread has decoded a random part of them (at
// least 340 still queued), while the Lua thread goes on decoding and
// answering that registration's items. Decoders are slowed a little for
// such a registration, so the unreg's cancel walk overlaps the consumer.
// For every registration, in every scenario: once an unreg of it returned
// (or its state's lua_close returned), none of its decoders or return
// callbacks may run with L != NULL; each one that does counts as "late",
// and late must be 0.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <link.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
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
  double scale = 1;         // DSS_TEST_TIMESCALE: stretches the bounded waits
  double fin_prob = 0.2;    // closes with draining finalizers
  double flood_prob = 0.1;  // states with an unreg during decode
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
      window_delivers{0}, max_queue{0},
      // 2v0
      v2{0}, timedout_queued{0}, timedout_pending{0}, queue_full{0},
      timeout_noroom{0}, cancelled_v2{0}, bad_flags{0}, queued_calls{0},
      deadlock_probes{0}, raised{0}, dispatched{0}, waits{0}, wait_timeouts{0},
      fd_wakeups{0}, fd_spurious{0}, datagrams{0}, coalesce_modes{0},
      maxqueue_changes{0}, stats_checks{0}, self_items{0}, mode_switches{0},
      // close with a draining finalizer
      fin_states{0}, fin_runs{0}, fin_decoded{0}, fin_regs{0}, fin_reg_refused{0},
      fin_items{0}, cancel_checks{0},
      // unreg during decode
      floods{0}, flood_items{0}, decode_unregs{0}, unreg_overlaps{0}, unreg_spanning{0},
      // callbacks with L != NULL after the registration ended
      late{0};
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
  F_ACCEPTED = 0x20,  // deliver queued it (SUCCESS, UDP_SEND_FAILED,
                      // CANCELLED, or TIMEOUT after it was queued)
  F_REFUSED = 0x40,   // deliver returned an error, nothing queued
  F_STARTED = 0x80,   // deliver was called
};
std::unique_ptr<std::atomic<std::uint8_t>[]> g_items;
std::atomic<std::uint64_t> g_next_item{0};

const std::uint32_t MAGIC = 0x5eed5eedu;
const std::uint32_t PROBE = 0xffffffffu;  // idx of refused probes
const std::uint32_t SELF = 0xfffffffeu;   // idx of a state's own items

// Actions, chosen by the producer.
enum {
  A_DEC0 = 0,        // decoder returns 0
  A_PUSH = 1,        // fire and forget: decoder pushes the callback
  A_CALL = 1,        // blocking: Lua calls the waiting-thread callback
  A_DROP = 2,        // ... drops it to the GC
  A_HOLD = 3,        // ... keeps it, calls or drops it later (or never)
  A_CALL_TWICE = 4,  // ... calls it twice (the second call is a no-op)
  A_RAISE = 5,       // fire and forget: the Lua callback raises
  A_DECRAISE = 6,    // fire and forget: the decoder raises
};
// How an item ended, as the producer sees it.
enum { ANS_NONE = 0, ANS_RETURNED, ANS_GARBAGE, ANS_DEC0, ANS_CANCELLED, ANS_TIMEDOUT };

struct StateRec;

// One registration (utilid), for the whole run: never freed before its end.
struct RegRec {
  std::uintptr_t utilid = 0;
  StateRec* owner = nullptr;              // the state it was registered in
  std::atomic<int> cancels{0};            // its client's cancel calls
  std::atomic<int> unreg_inflight{0};     // unreg calls on it not yet recorded
  std::atomic<int> stale_inflight{0};     // producers delivering to it as stale
  std::atomic<bool> unreg_done{false};    // an unreg of it returned SUCCESS
  std::atomic<int> unreg_by{0};           // ... made by (UNREG_BY)
  std::atomic<bool> unreg_early{false};   // ... before its lua_close was called
  std::atomic<bool> closed{false};        // its state's lua_close returned
  std::atomic<bool> flood{false};         // unreg-during-decode target
  std::atomic<std::uint64_t> decoded{0};  // its decoders run with L
};

const int NLIBS = 2;          // the client libraries a state registers
const int LATE_K = NLIBS;     // the one a finalizer registers during close
const int NREGS = NLIBS + 1;

// One opened Lua state, as producers see it (published in its slot), with
// the harness's own counts of what happened to its items. Never freed
// before the end of the run: producers may still hold it.
struct StateRec {
  // reg[k] (producers deliver to reg[k]->utilid) and, the same, utilid[k]:
  // the last registration of lib k, stale once unregistered.
  std::atomic<std::uintptr_t> utilid[NREGS];
  std::atomic<RegRec*> reg[NREGS];
  // Counted by the callbacks.
  std::atomic<std::uint64_t> dec_L{0}, returned{0}, garbage{0}, cancel_q{0},
      cancel_p{0}, timeout_q{0}, timeout_p{0}, self_ended{0};
  // Counted by producers once deliver returned.
  std::atomic<std::uint64_t> accepted{0}, rejected{0};
  // Producers between loading this record and counting their result.
  std::atomic<int> inflight{0};
  std::atomic<bool> closing{false};  // lua_close was called
  std::atomic<int> flood_k{-1};      // producers favour reg[flood_k]
  std::vector<RegRec*> regs;         // every registration made in it (state thread)
  StateRec() {
    for (int k = 0; k < NREGS; ++k) {
      utilid[k].store(0);
      reg[k].store(nullptr);
    }
  }
};

std::mutex g_recs_mu;
std::vector<std::unique_ptr<StateRec>> g_recs;

StateRec* new_rec() {
  std::lock_guard<std::mutex> lock(g_recs_mu);
  g_recs.emplace_back(new StateRec());
  return g_recs.back().get();
}

struct Payload {
  std::uint32_t magic;
  std::uint32_t idx;
  int action;
  bool blocking;
  void* utilid;
  int answer;  // written by the ending callback, read by a released producer
  StateRec* sr;
  RegRec* rr;  // the registration delivered to (not for probes or stale ids)
};

// The item this thread is delivering right now: a decoder or return
// callback with L == NULL for it, on this thread, is its timeout.
thread_local const Payload* t_delivering = nullptr;
// Decoders run with a Lua state on this thread, and those that raised.
thread_local std::uint64_t t_decoded = 0, t_decraised = 0;
// This state thread's UDP socket.
thread_local int t_udp = -1;
// Set on a state thread while it is inside lua_close.
thread_local bool t_in_close = false;

// Records that p's item ended; doubles are counted at the end from the flags.
void end_item(Payload* p, int answer) {
  p->answer = answer;
  if (p->idx == PROBE) {
    fail("a callback ran for a refused probe");
    return;
  }
  if (p->idx == SELF) {
    if (p->sr) p->sr->self_ended++;
    return;
  }
  std::uint8_t old = g_items[p->idx].fetch_add(1);
  if (old & F_REFUSED) fail("item %u: callback after deliver refused it", p->idx);
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
const char* const MODE_KEY = "stress.setmode";
const char* const REPORT_KEY = "stress.report";
const char* const DSS_KEY = "stress.dss";
const char* const ARM_KEY = "stress.arm";
const char* const UNBOUND_KEY = "stress.unbound";

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
const DSS_api_2v0_t* api2();

// --- registrations -----------------------------------------------------------

std::mutex g_regs_mu;
std::vector<std::unique_ptr<RegRec>> g_regs;
std::unordered_map<std::uintptr_t, RegRec*> g_reg_by_id;

// A record for a registration just made in owner's state (its state thread).
RegRec* new_reg(void* utilid, StateRec* owner) {
  RegRec* r = new RegRec();
  r->utilid = reinterpret_cast<std::uintptr_t>(utilid);
  r->owner = owner;
  {
    std::lock_guard<std::mutex> lock(g_regs_mu);
    g_regs.emplace_back(r);
    g_reg_by_id[r->utilid] = r;
  }
  owner->regs.push_back(r);
  return r;
}

RegRec* find_reg(void* utilid) {
  std::lock_guard<std::mutex> lock(g_regs_mu);
  auto it = g_reg_by_id.find(reinterpret_cast<std::uintptr_t>(utilid));
  return it == g_reg_by_id.end() ? nullptr : it->second;
}

// Who called unreg.
enum { BY_PRODUCER = 1, BY_LUA_THREAD, BY_QUIET, BY_CANCEL, BY_UNREG_THREAD };
const char* const UNREG_BY[] = {"?", "a producer", "the Lua thread", "a quiet moment",
                                "its cancel", "the unreg-during-decode thread"};

// unreg of rr's utilid, recorded in rr.
int unreg_rec(RegRec* rr, int by) {
  rr->unreg_inflight++;
  int rc = api()->unreg(reinterpret_cast<void*>(rr->utilid));
  if (rc == DSS_SUCCESS) {
    rr->unreg_by = by;
    rr->unreg_done = true;
    if (!rr->owner->closing.load()) rr->unreg_early = true;
  }
  rr->unreg_inflight--;
  return rc;
}

// A decoder or return callback runs with L != NULL: its registration must
// not have ended (an unreg of it returned, or its lua_close returned).
void check_late(const Payload* p, const char* who) {
  RegRec* rr = p->rr;
  if (!rr) return;
  bool unregd = rr->unreg_done.load(), closed = rr->closed.load();
  if (!unregd && !closed) return;
  st.late++;
  if (unregd)
    fail("item %u: %s ran with L != NULL after unreg(%#" PRIxPTR ") by %s returned", p->idx,
         who, rr->utilid, UNREG_BY[rr->unreg_by.load()]);
  else
    fail("item %u: %s ran with L != NULL after lua_close of its state (utilid %#" PRIxPTR
         ") returned", p->idx, who, rr->utilid);
}

extern "C" {

static int stress_ret(lua_State* L, void* pData, void* utilid, int garbage);

static int stress_decode(lua_State* L, void* pData, void* utilid) {
  Payload* p = static_cast<Payload*>(pData);
  if (!check_payload(p, utilid, "decoder")) return 0;
  StateRec* sr = p->sr;
  if (!L) {
    if (p == t_delivering) {  // its producer's timeout, while queued
      if (!p->blocking) fail("item %u: fire-and-forget item ended by a timeout", p->idx);
      st.timedout_queued++;
      if (sr) sr->timeout_q++;
      end_item(p, ANS_TIMEDOUT);
      return 0;
    }
    st.cancels++;
    if (sr) sr->cancel_q++;
    end_item(p, ANS_CANCELLED);
    if (!p->blocking) delete p;
    return 0;
  }
  t_decoded++;
  if (sr) sr->dec_L++;
  if (RegRec* rr = p->rr) {
    check_late(p, "decoder");
    rr->decoded.fetch_add(1, std::memory_order_relaxed);
    // unreg during decode: give the unregistering thread a chance to run
    if (rr->flood.load(std::memory_order_relaxed) && (t_rng() & 31) == 0)
      std::this_thread::yield();
  }
  // A blocking delivery from here (the Lua thread, inside poll or dispatch)
  // would wait for this very thread: refused at once.
  if (!p->blocking && p->idx != SELF && uniform() < 0.003) {
    Payload probe = {MAGIC, PROBE, A_CALL, true, p->utilid, ANS_NONE, nullptr, nullptr};
    int rc = uniform() < 0.5
                 ? api2()->deliver2(p->utilid, stress_decode, stress_ret, &probe, 0,
                                    uniform() < 0.5 ? DSS_TIMEOUT_INFINITE : 1000)
                 : api()->deliver(p->utilid, stress_decode, stress_ret, &probe);
    // INVALID_UTILID: a producer unregistered the library meanwhile;
    // NOT_STARTED: draining from a finalizer, the state closing.
    if (rc != DSS_ERR_WOULD_DEADLOCK && rc != DSS_ERR_INVALID_UTILID &&
        !(t_in_close && rc == DSS_ERR_NOT_STARTED))
      fail("a blocking deliver from a decoder returned %d, not WOULD_DEADLOCK", rc);
    st.deadlock_probes++;
  }
  if (p->action == A_DEC0 || p->action == A_DECRAISE) {
    st.dec0++;
    end_item(p, ANS_DEC0);
    bool raise = p->action == A_DECRAISE;
    if (!p->blocking) delete p;
    if (raise) {
      t_decraised++;
      st.raised++;
      luaL_error(L, "stress decoder raise");
    }
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
  if (p->idx < PROBE - 1) {
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
  StateRec* sr = p->sr;
  if (!p->blocking) {
    fail("item %u: return callback of a fire-and-forget item", p->idx);
    return 0;
  }
  if (p->idx < PROBE - 1 && !(g_items[p->idx].load() & F_DECODES))
    fail("item %u: return callback before it was decoded", p->idx);
  if (!L) {
    if (garbage) fail("item %u: return callback with L == NULL and garbage", p->idx);
    if (p == t_delivering) {  // its producer's timeout, while Lua held it
      st.timedout_pending++;
      if (sr) sr->timeout_p++;
      end_item(p, ANS_TIMEDOUT);
      return 0;
    }
    st.cancels++;
    if (sr) sr->cancel_p++;
    end_item(p, ANS_CANCELLED);
    return 0;
  }
  check_late(p, garbage ? "return callback (collected)" : "return callback");
  if (garbage) {
    if (p->action != A_DROP && p->action != A_HOLD)
      fail("item %u: collected, but its action was %d", p->idx, p->action);
    st.garbage++;
    if (sr) sr->garbage++;
    end_item(p, ANS_GARBAGE);
    return 0;
  }
  if (lua_gettop(L) < 1 || !lua_isnumber(L, 1) ||
      lua_tointeger(L, 1) != lua_Integer(p->idx))
    fail("item %u: return callback got the wrong Lua arguments", p->idx);
  st.returned++;
  if (sr) sr->returned++;
  end_item(p, ANS_RETURNED);
  if (!lua_checkstack(L, 1)) return 0;
  lua_pushinteger(L, lua_Integer(p->idx) * 2);
  return 1;
}

static void stress_cancel(void* utilid) {
  st.client_cancels++;
  if (!utilid) fail("cancel callback with a NULL utilid");
  RegRec* rr = find_reg(utilid);
  if (!rr)
    fail("cancel callback for utilid %p, never registered", utilid);
  else if (rr->cancels.fetch_add(1) != 0)
    fail("cancel callback for utilid %p called again", utilid);
  if (uniform() < 0.5) {
    int rc = rr ? unreg_rec(rr, BY_CANCEL) : api()->unreg(utilid);
    // INVALID_UTILID: a producer unregistered it concurrently.
    if (rc != DSS_SUCCESS && rc != DSS_ERR_INVALID_UTILID)
      fail("unreg from cancel returned %d", rc);
  }
}

}  // extern "C"

// --- the API structs, found through the registry ---------------------------

std::atomic<const DSS_api_1v0_t*> g_api{nullptr};
std::atomic<const DSS_api_2v0_t*> g_api2{nullptr};
const DSS_api_1v0_t* api() { return g_api.load(); }
const DSS_api_2v0_t* api2() { return g_api2.load(); }

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

// Registrations unregistered, or of closed states.
struct StaleList {
  std::mutex mu;
  RegRec* regs[256] = {};
  std::size_t n = 0;
  void push(RegRec* rr) {
    if (!rr) return;
    std::lock_guard<std::mutex> lock(mu);
    regs[n++ % 256] = rr;
  }
  RegRec* pick() {
    std::lock_guard<std::mutex> lock(mu);
    if (n == 0) return nullptr;
    return regs[t_rng() % (n < 256 ? n : 256)];
  }
  std::uintptr_t pick_id() {
    RegRec* rr = pick();
    return rr ? rr->utilid : 0;
  }
};
StaleList g_stale;

// --- slots: what each state thread publishes ---------------------------------

const char g_libids[NLIBS] = {0, 0};  // libids: their addresses
const char g_self_libid = 0;          // a state's own library (quiet moments)
const char g_late_libid = 0;          // registered by a finalizer during close

struct Slot {
  std::atomic<StateRec*> rec{nullptr};
};
std::unique_ptr<Slot[]> g_slots;

std::uintptr_t slot_utilid(int s, int k) {
  StateRec* r = g_slots[std::size_t(s)].rec.load();
  return r ? r->utilid[k].load() : 0;
}

RegRec* slot_reg(int s, int k) {
  StateRec* r = g_slots[std::size_t(s)].rec.load();
  return r ? r->reg[k].load() : nullptr;
}

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
local H = ...
local dss = require "darksidesync"
local unpack = table.unpack or unpack
local random = math.random
local held, nheld = {}, 0
local maxq = 0
local scale = H.scale
-- errors raised by callbacks (raised) or decoders (H.decraised()) must each
-- reach the error handler (handled) or a caller (caught), exactly once
local raised, handled, caught = 0, 0, 0
local decraised0 = H.decraised()  -- a per-thread count: this state's start
local mode, coalesce, has_handler = 0, false, false
local armed = false        -- coalesce: the queue was seen empty since the last datagram
local limit, bounded = 0, false
local fd
local C = { dispatched = 0, waits = 0, wait_timeouts = 0, fd_wakeups = 0,
            fd_spurious = 0, datagrams = 0, maxqueue_changes = 0 }
local WAITS = { 0, 0.001, 0.002, 0.01, 0.03 }
local LIMITS = { 0, 0, 1, 2, 3, 5, 16, 100 }

local function ours(msg)
  return type(msg) == "string" and
    (msg:find("stress raise", 1, true) or msg:find("stress decoder raise", 1, true)) ~= nil
end

local function handler(msg)
  if not ours(msg) then H.fail("error handler got: " .. tostring(msg)) end
  handled = handled + 1
end

-- wt(idx) returns idx * 2, or nothing at all when the item ended meanwhile
-- (an unreg from a producer thread, or its producer's timeout).
local function check(idx, ...)
  local n, r = select('#', ...), ...
  if n ~= 0 and (n ~= 1 or r ~= idx * 2) then
    error("waiting-thread callback of " .. idx .. " returned " .. tostring(r))
  end
end

-- fire and forget: cb(idx, action); blocking: cb(wt, idx, action)
local function cb(a, b, c)
  if type(a) == "number" then
    if c ~= nil then error("bad fire-and-forget arguments") end
    if b == 5 then
      raised = raised + 1
      error("stress raise " .. a)
    end
    if b ~= 1 then error("bad fire-and-forget arguments") end
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

local function run_dispatch(max)
  local d0 = H.decoded()
  local ok, n
  if max then ok, n = pcall(dss.dispatch, max) else ok, n = pcall(dss.dispatch) end
  local d = H.decoded() - d0
  if ok then
    if n ~= d then
      H.fail(("dispatch(%s) returned %s, %d decoders ran"):format(tostring(max), tostring(n), d))
    end
    if max and n > max then H.fail(("dispatch(%d) ran %d"):format(max, n)) end
    C.dispatched = C.dispatched + d
    return d
  end
  if not ours(n) then error(n, 0) end  -- (a finalizer's: the state stopped)
  if has_handler then H.fail("dispatch raised with an error handler set: " .. tostring(n)) end
  caught = caught + 1
  C.dispatched = C.dispatched + d
  return d
end

local function run_poll(maxpolls)
  local ran = 0
  for _ = 1, maxpolls do
    local ok, n, f, args = pcall(dss.poll)
    if not ok then
      if not ours(n) then error(n, 0) end
      caught = caught + 1
      ran = ran + 1
    else
      if n == -1 then break end
      ran = ran + 1
      if n > maxq then maxq = n end
      if f then
        local ok2, e = pcall(f, unpack(args))
        if not ok2 then
          if not ours(e) then error(e, 0) end
          caught = caught + 1
        end
      end
    end
  end
  return ran
end

-- dispatch until the queue is seen empty (bounded)
local function drain()
  local total = 0
  for _ = 1, 16 do
    total = total + run_dispatch()
    if dss.queuesize() == 0 then
      armed = coalesce
      return total
    end
  end
  armed = false
  return total
end

local function step(resolve, gc)
  local ran = 0
  if mode == 0 then
    ran = run_poll(64)
  elseif mode == 1 then
    ran = run_dispatch(random() < 0.5 and random(0, 64) or nil)
  elseif mode == 2 then
    local t = WAITS[random(#WAITS)]
    local t0 = H.now()
    local n = dss.wait(t)
    C.waits = C.waits + 1
    if n == 0 then
      C.wait_timeouts = C.wait_timeouts + 1
      local el = H.now() - t0
      if el < t - 0.001 then H.fail(("wait(%g) returned 0 after %.4f s"):format(t, el)) end
      if dss.queuesize() > 0 and dss.wait(2 * scale) == 0 and dss.queuesize() > 0 then
        H.fail("wait(2) returned 0 with items queued")
      end
    elseif type(n) ~= "number" or n < 1 then
      H.fail("wait returned " .. tostring(n))
    else
      ran = run_dispatch()
    end
  elseif mode == 3 then
    local f = dss.getfd()
    if fd and f ~= fd then H.fail("getfd returned " .. tostring(f) .. ", before " .. fd) end
    fd = f
    if H.fdready(fd, 20) then
      C.fd_wakeups = C.fd_wakeups + 1
      ran = run_dispatch()
      if ran == 0 then C.fd_spurious = C.fd_spurious + 1 end
    elseif dss.queuesize() > 0 and not H.fdready(fd, 2000 * scale) and dss.queuesize() > 0 then
      H.fail("the wake-up fd stayed unreadable for 2 s with items queued")
    end
  else
    local got = H.udp(20)
    if got == 0 and armed and dss.queuesize() > 0 then
      local nf = dss.stats().notifyfailed
      got = H.udp(2000 * scale)
      if got == 0 and dss.queuesize() > 0 and dss.stats().notifyfailed == nf then
        H.fail("coalesce: items queued since the queue was seen empty, and no datagram in 2 s")
      end
    end
    C.datagrams = C.datagrams + got
    if got > 0 or not armed then ran = drain() end
  end
  local q = dss.queuesize()
  if limit > 0 then
    if bounded and q > limit then
      H.fail(("queuesize() %d above the limit %d it was seen under"):format(q, limit))
    end
    if q <= limit then bounded = true end
  end
  if random() < 0.01 then
    limit = LIMITS[random(#LIMITS)]
    dss.setmaxqueue(limit)
    if dss.getmaxqueue() ~= limit then H.fail("getmaxqueue() is not " .. limit) end
    bounded = false
    C.maxqueue_changes = C.maxqueue_changes + 1
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
  local r = raised + H.decraised() - decraised0
  if r ~= handled + caught then
    H.fail(("%d errors raised, %d reached the handler, %d a caller"):format(r, handled, caught))
  end
  return ran, maxq
end

-- mode: 0 poll, 1 dispatch, 2 wait, 3 getfd, 4 UDP (port, co: coalesce);
-- h: set the error handler
local function setmode(m, port, co, h)
  mode = m
  armed = false
  if m == 4 then
    if co then dss.setport(port, "coalesce")
    elseif random() < 0.5 then dss.setport(port)
    else dss.setport(port, "each") end
    if dss.getport() ~= port then H.fail("getport() is not " .. port) end
  elseif dss.setport(0) ~= 1 then
    H.fail("setport(0) did not return 1")
  end
  coalesce = m == 4 and co
  if h then dss.seterrorhandler(handler)
  elseif random() < 0.5 then dss.seterrorhandler(nil)
  else dss.seterrorhandler() end
  has_handler = h
end

local function report()
  C.raised = raised
  C.fd = fd or -1
  return C
end

-- unreg during decode: the queue unbounded, so that a flood is queued whole
local function unbound()
  limit = 0
  bounded = false
  dss.setmaxqueue(0)
end

-- close with a draining finalizer -------------------------------------------
-- Objects whose __gc runs a plan during lua_close; anchored here, so that
-- only lua_close collects them.
local STOPPED = "not started, or already stopped"
local fins = {}

local function fin_check(ok, e)
  if not ok and not (type(e) == "string" and (e:find(STOPPED, 1, true) or ours(e))) then
    H.fail("finalizer: " .. tostring(e))
  end
end

local function answer_held()
  for k = nheld, 1, -1 do
    if random() < 0.5 then
      local h = held[k]
      held[k] = held[nheld]
      held[nheld] = nil
      nheld = nheld - 1
      check(h[2], h[1](h[2]))
    end
  end
end

local function dispatch_all()
  for _ = 1, 64 do
    if run_dispatch() == 0 or dss.queuesize() == 0 then return end
  end
end

-- plan: a letter a step. p: poll until the queue is empty; d: dispatch
-- until it is; D: dispatch(n) once; h: answer some held waiting-thread
-- callbacks; r: register a new client (H.reglate). Errors are caught: a
-- state already stopped says so, and the stress errors are expected.
local function runplan(plan)
  H.finrun()
  for i = 1, #plan do
    local c = plan:sub(i, i)
    if c == "p" then fin_check(pcall(run_poll, 4000))
    elseif c == "d" then fin_check(pcall(dispatch_all))
    elseif c == "D" then fin_check(pcall(run_dispatch, random(1, 16)))
    elseif c == "h" then fin_check(pcall(answer_held))
    elseif c == "r" then fin_check(pcall(H.reglate))
    end
  end
end

local setgc
if newproxy then  -- 5.1, LuaJIT
  setgc = function(f)
    local u = newproxy(true)
    getmetatable(u).__gc = f
    return u
  end
else
  setgc = function(f) return setmetatable({}, { __gc = f }) end
end

local function arm(plan)
  fins[#fins + 1] = setgc(function() runplan(plan) end)
end

return cb, step, setmode, report, dss, arm, unbound
)LUA";

bool lua_do(lua_State* L, int nargs, int nres, const char* what) {
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    fail("%s: %s", what, lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  return true;
}

// The state thread's current state (for the helpers a finalizer calls).
thread_local StateRec* t_sr = nullptr;
thread_local Slot* t_slot = nullptr;

// Publishes rr as sr's registration k (and in the record producers see now,
// when a quiet moment replaced sr).
void publish_reg(StateRec* sr, int k, RegRec* rr) {
  sr->reg[k].store(rr);
  sr->utilid[k].store(rr->utilid);
  StateRec* cur = t_slot ? t_slot->rec.load() : nullptr;
  if (cur && cur != sr) {
    cur->reg[k].store(rr);
    cur->utilid[k].store(rr->utilid);
  }
}

// A fire-and-forget item from this (the state's) thread to rr, counted as a
// producer's would be. Returns deliver2's code, or 1 when the run's item
// budget is spent.
int self_deliver(StateRec* sr, RegRec* rr) {
  std::uint64_t idx = g_next_item.fetch_add(1);
  if (idx >= opt.items) return 1;
  double r = uniform();
  int action = r < 0.1 ? A_DEC0 : r < 0.13 ? A_RAISE : r < 0.15 ? A_DECRAISE : A_PUSH;
  void* id = reinterpret_cast<void*>(rr->utilid);
  Payload* p = new Payload{MAGIC, std::uint32_t(idx), action, false, id, ANS_NONE, sr, rr};
  st.ff++;
  st.v2++;
  g_items[idx].fetch_or(F_STARTED);
  int rc = api2()->deliver2(id, stress_decode, nullptr, p, DSS_DELIVER_NOWAIT,
                            DSS_TIMEOUT_INFINITE);
  if (rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED) {
    st.accepted++;
    sr->accepted++;
    g_items[idx].fetch_or(F_ACCEPTED);
    return rc;
  }
  st.refused++;
  std::uint8_t old = g_items[idx].fetch_or(F_REFUSED);
  if (old & (F_ENDS | F_DECODES))
    fail("item %" PRIu64 ": refused (%d) but its callbacks ran", idx, rc);
  if (rc == DSS_ERR_NOT_STARTED) {
    st.not_started++;
  } else if (rc == DSS_ERR_QUEUE_FULL) {
    st.queue_full++;
    sr->rejected++;
  } else if (rc != DSS_ERR_INVALID_UTILID) {
    fail("item %" PRIu64 ": the state's own deliver2 returned %d", idx, rc);
  }
  delete p;
  return rc;
}

// --- helpers the driver calls (table H) ------------------------------------------

extern "C" {

static int h_finrun(lua_State*) {
  st.fin_runs++;
  return 0;
}

// reglate(): from a finalizer during lua_close, registers a client of its
// own, publishes it to the producers and delivers a few items to it. The
// state may refuse (NOT_STARTED: already stopped).
static int h_reglate(lua_State* L) {
  StateRec* sr = t_sr;
  if (!sr || !api()) return 0;
  int err = 0;
  void* id = api()->reg(L, const_cast<char*>(&g_late_libid), stress_cancel, &err);
  if (!id) {
    if (err != DSS_ERR_NOT_STARTED) fail("reg during lua_close: NULL, code %d", err);
    st.fin_reg_refused++;
    return 0;
  }
  if (err == DSS_ERR_ALREADY_REGISTERED) {  // an earlier finalizer's
    RegRec* rr = sr->reg[LATE_K].load();
    if (!rr || rr->utilid != reinterpret_cast<std::uintptr_t>(id))
      fail("reg during lua_close: ALREADY_REGISTERED with utilid %p, not ours", id);
    return 0;
  }
  if (err != DSS_SUCCESS) {
    fail("reg during lua_close: utilid %p with code %d", id, err);
    return 0;
  }
  RegRec* rr = new_reg(id, sr);
  st.fin_regs++;
  publish_reg(sr, LATE_K, rr);
  int n = int(t_rng() % 8);
  for (int i = 0; i < n; ++i) {
    int rc = self_deliver(sr, rr);
    if (rc != DSS_SUCCESS && rc != DSS_ERR_UDP_SEND_FAILED) break;
    st.fin_items++;
  }
  return 0;
}

static int h_decoded(lua_State* L) {
  lua_pushnumber(L, lua_Number(t_decoded));
  return 1;
}

static int h_decraised(lua_State* L) {
  lua_pushnumber(L, lua_Number(t_decraised));
  return 1;
}

static int h_now(lua_State* L) {
  lua_pushnumber(L, lua_Number(now_ns()) / 1e9);
  return 1;
}

static int h_fail(lua_State* L) {
  fail("lua: %s", luaL_checkstring(L, 1));
  return 0;
}

// fdready(fd, ms): whether fd is readable within ms (poll(2)).
static int h_fdready(lua_State* L) {
  int fd = int(luaL_checkinteger(L, 1));
  int ms = int(luaL_checknumber(L, 2));
  pollfd p = {fd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  if (r < 0 || (p.revents & (POLLNVAL | POLLERR)))
    fail("poll(2) on the wake-up fd %d: r=%d revents=%#x", fd, r, unsigned(p.revents));
  lua_pushboolean(L, r > 0 && (p.revents & POLLIN));
  return 1;
}

// udp(ms): waits up to ms for a datagram on this thread's socket, then reads
// every one there; returns how many.
static int h_udp(lua_State* L) {
  int ms = int(luaL_checknumber(L, 1));
  pollfd p = {t_udp, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  int n = 0;
  for (;;) {
    char buf[64];
    ssize_t len = ::recv(t_udp, buf, sizeof buf - 1, MSG_DONTWAIT);
    if (len < 0) break;
    buf[len] = 0;
    if (len < 2 || buf[0] != ' ' || std::atol(buf + 1) < 1)
      fail("a datagram reads '%s', not ' <count>'", buf);
    ++n;
  }
  lua_pushinteger(L, n);
  return 1;
}

}  // extern "C"

void push_helpers(lua_State* L) {
  lua_newtable(L);
  lua_pushcfunction(L, h_decoded);
  lua_setfield(L, -2, "decoded");
  lua_pushcfunction(L, h_decraised);
  lua_setfield(L, -2, "decraised");
  lua_pushcfunction(L, h_now);
  lua_setfield(L, -2, "now");
  lua_pushcfunction(L, h_fail);
  lua_setfield(L, -2, "fail");
  lua_pushcfunction(L, h_fdready);
  lua_setfield(L, -2, "fdready");
  lua_pushcfunction(L, h_udp);
  lua_setfield(L, -2, "udp");
  lua_pushcfunction(L, h_finrun);
  lua_setfield(L, -2, "finrun");
  lua_pushcfunction(L, h_reglate);
  lua_setfield(L, -2, "reglate");
  lua_pushnumber(L, lua_Number(opt.scale));
  lua_setfield(L, -2, "scale");
}

// Calls darksidesync.<fn>(args...) with number arguments, leaving nres
// results; false (reported) if it raised.
bool dcall(lua_State* L, const char* fn, std::initializer_list<lua_Number> args,
           int nres) {
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_KEY);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  for (lua_Number a : args) lua_pushnumber(L, a);
  std::string what = std::string("darksidesync.") + fn;
  return lua_do(L, int(args.size()), nres, what.c_str());
}

// darksidesync.<fn>() as an integer, or -1 (reported) if it raised.
long long dcall_int(lua_State* L, const char* fn,
                    std::initializer_list<lua_Number> args = {}) {
  if (!dcall(L, fn, args, 1)) return -1;
  long long v = static_cast<long long>(lua_tonumber(L, -1));
  lua_pop(L, 1);
  return v;
}

struct DssStats {
  std::uint64_t delivered, decoded, returned, cancelled, timedout, rejected,
      notified, notifyfailed, queued, maxqueued, blocked;
};

bool get_stats(lua_State* L, DssStats* s) {
  if (!dcall(L, "stats", {}, 1)) return false;
  if (!lua_istable(L, -1)) {
    fail("stats() returned a %s", luaL_typename(L, -1));
    lua_pop(L, 1);
    return false;
  }
  struct {
    const char* name;
    std::uint64_t* v;
  } fields[] = {{"delivered", &s->delivered}, {"decoded", &s->decoded},
                {"returned", &s->returned},   {"cancelled", &s->cancelled},
                {"timedout", &s->timedout},   {"rejected", &s->rejected},
                {"notified", &s->notified},   {"notifyfailed", &s->notifyfailed},
                {"queued", &s->queued},       {"maxqueued", &s->maxqueued},
                {"blocked", &s->blocked}};
  bool ok = true;
  for (auto& f : fields) {
    lua_getfield(L, -1, f.name);
    if (!lua_isnumber(L, -1)) {
      fail("stats().%s is a %s", f.name, luaL_typename(L, -1));
      ok = false;
    }
    *f.v = std::uint64_t(lua_tonumber(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return ok;
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
  push_helpers(L);
  if (!lua_do(L, 1, 7, "require darksidesync / driver")) {
    lua_close(L);
    return nullptr;
  }
  lua_setfield(L, LUA_REGISTRYINDEX, UNBOUND_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, ARM_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, DSS_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, REPORT_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, MODE_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, STEP_KEY);
  lua_setfield(L, LUA_REGISTRYINDEX, CB_KEY);

  // registry["DSS.DarkSideSync"]["DSS API 1v0"] and ["DSS API 2v0"]
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (!lua_istable(L, -1)) {
    fail("registry has no %s table", DSS_REGISTRY_NAME);
    lua_close(L);
    return nullptr;
  }
  lua_getfield(L, -1, DSS_API_1v0_KEY);
  auto a = static_cast<const DSS_api_1v0_t*>(lua_touserdata(L, -1));
  lua_getfield(L, -2, DSS_API_2v0_KEY);
  auto a2 = static_cast<const DSS_api_2v0_t*>(lua_touserdata(L, -1));
  lua_pop(L, 3);
  if (!a || std::strcmp(a->version, DSS_API_1v0_KEY) != 0) {
    fail("no valid '%s' in the registry", DSS_API_1v0_KEY);
    lua_close(L);
    return nullptr;
  }
  if (!a2 || std::strcmp(a2->version, DSS_API_2v0_KEY) != 0) {
    fail("no valid '%s' in the registry", DSS_API_2v0_KEY);
    lua_close(L);
    return nullptr;
  }
  const DSS_api_1v0_t* expected = nullptr;
  if (!g_api.compare_exchange_strong(expected, a) && expected != a)
    fail("the API struct moved: %p, was %p (module reloaded elsewhere?)",
         static_cast<const void*>(a), static_cast<const void*>(expected));
  const DSS_api_2v0_t* expected2 = nullptr;
  if (!g_api2.compare_exchange_strong(expected2, a2) && expected2 != a2)
    fail("the 2v0 API struct moved: %p, was %p", static_cast<const void*>(a2),
         static_cast<const void*>(expected2));
  return L;
}

// Makes sure lib k is registered in L; publishes its utilid in sr.
void ensure_registered(lua_State* L, StateRec* sr, int k) {
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
  RegRec* rr = new_reg(id, sr);
  int err2 = 0;
  void* again = api()->reg(L, libid, stress_cancel, &err2);
  if (again != id || err2 != DSS_ERR_ALREADY_REGISTERED)
    fail("reg again returned %p code %d, expected %p ALREADY_REGISTERED", again,
         err2, id);
  sr->reg[k].store(rr);
  sr->utilid[k].store(reinterpret_cast<std::uintptr_t>(id));
}

// A record for producers after sr went quiet or closed: the same (stale
// from now on) registrations.
StateRec* tomb_of(StateRec* sr) {
  StateRec* tomb = new_rec();
  for (int k = 0; k < NREGS; ++k) {
    tomb->reg[k].store(sr->reg[k].load());
    tomb->utilid[k].store(sr->utilid[k].load());
  }
  return tomb;
}

void wait_window() {
  if (!g_want_window.load()) return;
  g_closed_waiting.fetch_add(1);
  while (g_want_window.load())
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  g_closed_waiting.fetch_sub(1);
}

// Sets how the state drains (see setmode in the driver).
bool set_mode(lua_State* L, int mode, int port) {
  bool co = mode == 4 && uniform() < 0.5;
  if (co) st.coalesce_modes++;
  st.mode_switches++;
  lua_getfield(L, LUA_REGISTRYINDEX, MODE_KEY);
  lua_pushinteger(L, mode);
  lua_pushinteger(L, port);
  lua_pushboolean(L, co);
  lua_pushboolean(L, uniform() < 0.5);
  return lua_do(L, 4, 0, "setmode");
}

int pick_mode() {
  static const int weights[] = {0, 0, 1, 1, 2, 3, 4, 4};  // poll, dispatch, wait, fd, UDP
  return weights[t_rng() % 8];
}

bool fd_readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  return r > 0 && (p.revents & POLLIN);
}

// Adds the driver's counters to the totals; returns the wake-up fd, or -1.
int collect_report(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, REPORT_KEY);
  if (!lua_do(L, 0, 1, "report")) return -1;
  struct {
    const char* name;
    std::atomic<std::uint64_t>* v;
  } fields[] = {{"dispatched", &st.dispatched},   {"waits", &st.waits},
                {"wait_timeouts", &st.wait_timeouts}, {"fd_wakeups", &st.fd_wakeups},
                {"fd_spurious", &st.fd_spurious}, {"datagrams", &st.datagrams},
                {"maxqueue_changes", &st.maxqueue_changes}, {"raised", &st.raised}};
  for (auto& f : fields) {
    lua_getfield(L, -1, f.name);
    *f.v += std::uint64_t(lua_tonumber(L, -1));
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "fd");
  int fd = int(lua_tonumber(L, -1));
  lua_pop(L, 2);
  return fd;
}

// The harness's counts of a quiet state against its stats().
void compare_stats(lua_State* L, StateRec* sr, const char* when) {
  DssStats s;
  if (!get_stats(L, &s)) return;
  std::uint64_t accepted = sr->accepted.load(), rejected = sr->rejected.load(),
                dec = sr->dec_L.load(), ret = sr->returned.load() + sr->garbage.load(),
                cq = sr->cancel_q.load(), cp = sr->cancel_p.load(),
                tq = sr->timeout_q.load(), tp = sr->timeout_p.load();
  struct {
    const char* name;
    std::uint64_t got, want;
  } rows[] = {{"delivered", s.delivered, accepted},
              {"decoded", s.decoded, dec},
              {"returned", s.returned, ret},
              {"cancelled", s.cancelled, cq + cp},
              {"timedout", s.timedout, tq + tp},
              {"rejected", s.rejected, rejected},
              {"queued", s.queued, 0},
              {"blocked", s.blocked, 0},
              {"delivered - decoded - cancelled/timedout while queued",
               s.delivered - s.decoded - cq - tq, 0}};
  for (auto& r : rows)
    if (r.got != r.want)
      fail("%s: stats().%s is %" PRIu64 ", the harness counted %" PRIu64, when,
           r.name, r.got, r.want);
  if (s.delivered && s.maxqueued == 0)
    fail("%s: stats().maxqueued is 0 after %" PRIu64 " deliveries", when, s.delivered);
  if (dcall_int(L, "queuesize") != 0) fail("%s: queuesize() is not 0", when);
}

// A quiet moment before closing (see the header). sr is the state's record,
// published in slot.
void quiet_check(lua_State* L, Slot& slot, StateRec* sr) {
  // Nobody can reach the state any more: its libraries are unregistered,
  // and producers that loaded its record have counted their results.
  for (int k = 0; k < NLIBS; ++k) {
    RegRec* rr = sr->reg[k].load();
    if (!rr) continue;
    int rc = unreg_rec(rr, BY_QUIET);
    if (rc == DSS_SUCCESS) {
      st.unregs++;
      g_stale.push(rr);
    } else if (rc != DSS_ERR_INVALID_UTILID) {
      fail("quiet: unreg returned %d", rc);
    }
  }
  slot.rec.store(tomb_of(sr));
  // ... and unregs made elsewhere (a producer, the unreg-during-decode
  // thread) have returned: their cancellations are counted.
  auto busy = [sr] {
    if (sr->inflight.load() != 0) return true;
    for (RegRec* rr : sr->regs)
      if (rr->unreg_inflight.load() != 0) return true;
    return false;
  };
  auto deadline = Clock::now() + std::chrono::milliseconds(std::int64_t(10000 * opt.scale));
  while (busy()) {
    if (Clock::now() > deadline) {
      fail("quiet: a producer stayed inside deliver or unreg to an unregistered library for 10 s");
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  compare_stats(L, sr, "quiet");
  // The fd: the queue is empty, so it is not readable.
  int fd = int(dcall_int(L, "getfd"));
  if (fd < 0) return;
  if (fd_readable(fd)) fail("quiet: the wake-up fd is readable with an empty queue");
  if (dcall_int(L, "wait", {0}) != 0) fail("quiet: wait(0) is not 0 with an empty queue");

  // The state's own items, into its empty queue.
  int err = 0;
  void* self = api()->reg(L, const_cast<char*>(&g_self_libid), stress_cancel, &err);
  if (!self || err != DSS_SUCCESS) {
    fail("quiet: reg returned %p, code %d", self, err);
    return;
  }
  RegRec* selfrr = new_reg(self, sr);
  long long limit = dcall_int(L, "getmaxqueue");
  long long m = std::int64_t(t_rng() % 12);
  long long want = limit > 0 && limit < m ? limit : m;
  long long accepted = 0;
  const DSS_api_2v0_t* a2 = api2();
  auto self_item = [&](unsigned flags, long timeout_ms, int expect) {
    Payload* p = new Payload{MAGIC, SELF, A_PUSH, false, self, ANS_NONE, sr, selfrr};
    int rc = a2->deliver2(self, stress_decode, nullptr, p, flags, timeout_ms);
    if (rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED) {
      sr->accepted++;
      accepted++;
      st.self_items++;
    } else {
      if (rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT) sr->rejected++;
      delete p;
    }
    bool ok = expect == DSS_SUCCESS ? rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED
                                    : rc == expect;
    if (!ok)
      fail("quiet: deliver2(flags %#x, timeout %ld) #%lld into a queue of %lld "
           "(limit %lld) returned %d, expected %d",
           flags, timeout_ms, accepted, accepted, limit, rc, expect);
  };
  for (long long i = 0; i < m; ++i)
    self_item(DSS_DELIVER_NOWAIT, uniform() < 0.5 ? -1 : 0,
              i < want ? DSS_SUCCESS : DSS_ERR_QUEUE_FULL);
  if (limit > 0 && accepted == limit) {
    self_item(0, 0, DSS_ERR_QUEUE_FULL);  // timeout 0: never wait
    self_item(0, 1, DSS_ERR_TIMEOUT);     // nobody makes room in 1 ms
  }
  long q = a2->queued(self);
  if (q != accepted) fail("quiet: queued(utilid) is %ld, %lld queued", q, accepted);
  q = a2->queued(reinterpret_cast<void*>(sr->utilid[0].load()));
  if (q != DSS_ERR_INVALID_UTILID)
    fail("quiet: queued(unregistered utilid) returned %ld", q);
  if (dcall_int(L, "queuesize") != accepted)
    fail("quiet: queuesize() is not %lld", accepted);
  DssStats s;
  if (get_stats(L, &s) && s.queued != std::uint64_t(accepted))
    fail("quiet: stats().queued is %" PRIu64 ", %lld queued", s.queued, accepted);
  if (dcall_int(L, "wait", {0}) != accepted) fail("quiet: wait(0) is not %lld", accepted);
  if (fd_readable(fd) != (accepted > 0))
    fail("quiet: the wake-up fd is %sreadable with %lld queued",
         accepted > 0 ? "not " : "", accepted);
  std::uint64_t d0 = t_decoded;
  long long ran = dcall_int(L, "dispatch");
  if (ran != accepted || t_decoded - d0 != std::uint64_t(accepted))
    fail("quiet: dispatch() returned %lld, %" PRIu64 " decoders ran, %lld queued", ran,
         t_decoded - d0, accepted);
  if (sr->self_ended.load() != std::uint64_t(accepted))
    fail("quiet: %" PRIu64 " of %lld own items ended", sr->self_ended.load(), accepted);
  if (fd_readable(fd)) fail("quiet: the wake-up fd is readable once dispatch() emptied the queue");
  int rc = unreg_rec(selfrr, BY_QUIET);
  if (rc != DSS_SUCCESS) fail("quiet: unreg of the own library returned %d", rc);
  compare_stats(L, sr, "quiet, own items");
  st.stats_checks++;
}

// --- unreg during decode ---------------------------------------------------------

const std::uint64_t QBLOCK = 340;  // entries in a queue block (docs/design.md)

// A request to the unreg thread: unregister rr (the state's lib k) once the
// Lua thread has decoded `after` of its items.
struct UnregReq {
  RegRec* rr;
  int k;
  std::uint64_t after;
};
std::mutex g_ureq_mu;
std::condition_variable g_ureq_cv;
std::deque<UnregReq> g_ureq;
std::atomic<std::int64_t> g_unreg_enter_ns{0};  // inside unreg since, or 0
std::atomic<bool> g_unreg_exited{false};

// On the Lua thread, between two steps: floods one of the state's
// registrations with more than a queue block of items and asks the unreg
// thread to unregister it while they are decoded.
void flood(lua_State* L, StateRec* sr) {
  int k = int(t_rng() % NLIBS);
  ensure_registered(L, sr, k);
  RegRec* rr = sr->reg[k].load();
  if (!rr || rr->unreg_done.load()) return;
  lua_getfield(L, LUA_REGISTRYINDEX, UNBOUND_KEY);
  if (!lua_do(L, 0, 0, "unbound")) return;
  rr->flood = true;
  sr->flood_k = k;  // producers favour it
  std::uint64_t d0 = rr->decoded.load();
  int n = 400 + int(t_rng() % 1200);
  std::uint64_t got = 0;
  for (int i = 0; i < n; ++i) {
    int rc = self_deliver(sr, rr);
    if (rc != DSS_SUCCESS && rc != DSS_ERR_UDP_SEND_FAILED) break;  // unregistered
    ++got;
  }
  st.floods++;
  st.flood_items += got;
  // Unregister with at least a block's worth still queued.
  std::uint64_t after = d0 + (got > QBLOCK ? t_rng() % (got - QBLOCK) : 0);
  {
    std::lock_guard<std::mutex> lock(g_ureq_mu);
    g_ureq.push_back(UnregReq{rr, k, after});
  }
  g_ureq_cv.notify_one();
}

void unreg_thread() {
  for (;;) {
    UnregReq req;
    {
      std::unique_lock<std::mutex> lock(g_ureq_mu);
      while (g_ureq.empty()) {
        if (g_stop.load() && g_states_exited.load() == opt.states) {
          g_unreg_exited = true;
          return;
        }
        g_ureq_cv.wait_for(lock, std::chrono::milliseconds(20));
      }
      req = g_ureq.front();
      g_ureq.pop_front();
    }
    RegRec* rr = req.rr;
    StateRec* sr = rr->owner;
    auto deadline = Clock::now() + std::chrono::milliseconds(std::int64_t(1000 * opt.scale));
    while (rr->decoded.load() < req.after && !sr->closing.load() && !rr->unreg_done.load() &&
           Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(10));
    long q = api2()->queued(reinterpret_cast<void*>(rr->utilid));
    std::uint64_t d0 = rr->decoded.load();
    g_unreg_enter_ns = now_ns();
    int rc = unreg_rec(rr, BY_UNREG_THREAD);
    g_unreg_enter_ns = 0;
    std::uint64_t d1 = rr->decoded.load();
    if (rc == DSS_SUCCESS) {
      st.unregs++;
      st.decode_unregs++;
      g_stale.push(rr);
      if (d1 != d0) st.unreg_overlaps++;  // the Lua thread decoded meanwhile
      if (q > long(QBLOCK)) st.unreg_spanning++;  // the walk spans blocks
    } else if (rc != DSS_ERR_INVALID_UTILID) {
      fail("unreg during decode returned %d", rc);
    }
    rr->flood = false;
    int expected = req.k;  // unless a newer flood of the state took over
    sr->flood_k.compare_exchange_strong(expected, -1);
  }
}

// --- close with a draining finalizer -----------------------------------------------

// The plans of the state's finalizers, for failure messages.
thread_local std::string t_plans;

// Makes an object whose finalizer runs a random plan (see runplan in the
// driver) during lua_close.
void arm_finalizer(lua_State* L, bool early) {
  static const char letters[] = "pppdddDhrr";
  char plan[5];
  int n = 1 + int(t_rng() % 4);
  for (int i = 0; i < n; ++i) plan[i] = letters[t_rng() % (sizeof letters - 1)];
  plan[n] = 0;
  if (!t_plans.empty()) t_plans += ',';
  if (early) t_plans += "early:";
  t_plans += plan;
  lua_getfield(L, LUA_REGISTRYINDEX, ARM_KEY);
  lua_pushstring(L, plan);
  lua_do(L, 1, 0, "arm");
}

// After lua_close(L) of sr's state returned: its registrations are gone,
// each client's cancel ran as it should have, and every producer that
// delivered to it (live or stale utilids) comes out of deliver.
void after_close(int s, Slot& slot, StateRec* sr) {
  for (RegRec* rr : sr->regs) rr->closed = true;
  StateRec* cur = slot.rec.load();  // sr, or the record of its quiet moment
  slot.rec.store(tomb_of(cur));
  double limit_s = std::min(10.0, opt.hang_seconds) * opt.scale;
  auto deadline =
      Clock::now() + std::chrono::milliseconds(std::int64_t(limit_s * 1000));
  int live = 0, uncancelled = 0, early = 0;
  std::uintptr_t first = 0;
  for (RegRec* rr : sr->regs) {
    long q = api2()->queued(reinterpret_cast<void*>(rr->utilid));
    if (q != DSS_ERR_INVALID_UTILID && !live++) first = rr->utilid;
    while (rr->unreg_inflight.load() != 0 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    int c = rr->cancels.load();
    if (c == 0 && !rr->unreg_done.load()) ++uncancelled;
    if (c != 0 && rr->unreg_early.load()) ++early;
    st.cancel_checks++;
  }
  const char* plans = t_plans.empty() ? "none" : t_plans.c_str();
  if (live)
    fail("state %d: %d of its %zu utilids (first %#" PRIxPTR ") still registered after "
         "lua_close returned (finalizer plans: %s)", s, live, sr->regs.size(), first, plans);
  if (uncancelled)
    fail("state %d: %d registration(s) live at lua_close whose cancel was never called "
         "(finalizer plans: %s)", s, uncancelled, plans);
  if (early)
    fail("state %d: cancel called for %d registration(s) unregistered before lua_close", s,
         early);
  auto inside = [&] {
    int n = sr->inflight.load() + (cur != sr ? cur->inflight.load() : 0);
    for (RegRec* rr : sr->regs) n += rr->stale_inflight.load();
    return n;
  };
  while (int n = inside()) {
    if (Clock::now() > deadline) {
      fail("state %d: %d producer(s) still inside deliver to it %.0f s after lua_close "
           "returned (finalizer plans: %s)", s, n, limit_s, plans);
      st.hung++;
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

std::unique_ptr<std::atomic<std::int64_t>[]> g_close_ns;  // inside lua_close since, or 0

void state_thread(int s) {
  t_rng.seed(opt.seed * 1000003u + 17u + std::uint64_t(s));
  Slot& slot = g_slots[std::size_t(s)];
  // A UDP socket for setport, bound to a free port on localhost.
  t_udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t salen = sizeof sa;
  if (t_udp < 0 || ::bind(t_udp, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(t_udp, reinterpret_cast<sockaddr*>(&sa), &salen) != 0) {
    fail("state %d: no UDP socket: %s", s, std::strerror(errno));
    g_stop = true;
    g_states_exited.fetch_add(1);
    return;
  }
  int port = ntohs(sa.sin_port);
  while (!g_stop.load()) {
    wait_window();
    if (g_stop.load()) break;
    lua_State* L = open_state(t_rng());
    if (!L) {
      g_stop = true;
      break;
    }
    st.states_opened++;
    StateRec* sr = new_rec();
    t_sr = sr;
    t_slot = &slot;
    bool first = true;
    for (int k = 0; k < NLIBS; ++k) ensure_registered(L, sr, k);
    slot.rec.store(sr);
    int mode = pick_mode();
    bool ok = set_mode(L, mode, port);
    // Now and then a finalizer made early: it runs before or after the hub's
    // closer, depending on what the state does meanwhile.
    bool fin = false;
    t_plans.clear();
    if (ok && uniform() < opt.fin_prob / 4) {
      arm_finalizer(L, true);
      fin = true;
    }
    int flood_step = uniform() < opt.flood_prob ? 1 + int(t_rng() % 16) : -1;
    auto until = Clock::now() +
                 std::chrono::milliseconds(1 + std::int64_t(t_rng() % std::uint64_t(opt.max_open_ms)));
    int steps = 0;
    while (ok && !g_stop.load() && Clock::now() < until) {
      if (steps == flood_step) flood(L, sr);
      lua_getfield(L, LUA_REGISTRYINDEX, STEP_KEY);
      lua_pushnumber(L, 0.05);
      lua_pushboolean(L, ++steps % 16 == 0);
      if (!lua_do(L, 2, 2, "step")) break;
      lua_Integer ran = lua_tointeger(L, -2);
      update_max(st.max_queue, std::uint64_t(lua_tointeger(L, -1)));
      lua_pop(L, 2);
      // Unregister a client mid-flight, now and then, from the Lua thread.
      if (uniform() < 0.004) {
        int k = int(t_rng() % NLIBS);
        RegRec* rr = sr->reg[k].load();
        int rc = rr ? unreg_rec(rr, BY_LUA_THREAD) : DSS_ERR_INVALID_UTILID;
        if (rc == DSS_SUCCESS) {
          st.unregs++;
          g_stale.push(rr);
        } else if (rc != DSS_ERR_INVALID_UTILID) {
          fail("unreg returned %d", rc);
        }
      }
      // Re-register what was unregistered (here or by a producer).
      if (uniform() < 0.3 || first) {
        for (int k = 0; k < NLIBS; ++k) {
          std::uintptr_t before = sr->utilid[k].load();
          ensure_registered(L, sr, k);
          if (!first && sr->utilid[k].load() != before) st.reregs++;
        }
        first = false;
      }
      if (uniform() < 0.02) {
        mode = pick_mode();
        ok = set_mode(L, mode, port);
      }
      if (ran == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    // Half the time a quiet moment first; else close while producers are
    // blocked and deliveries race the close. The slot keeps publishing the
    // utilids: they are stale from now on.
    if (ok && t_rng() % 2 == 0) quiet_check(L, slot, sr);
    collect_report(L);
    // Close with a draining finalizer: made after the last poll, it runs
    // first. Items pile up for a moment before.
    if (ok && uniform() < opt.fin_prob) {
      std::this_thread::sleep_for(std::chrono::microseconds(t_rng() % 3000));
      for (int i = 1 + int(t_rng() % 3); i > 0; --i) arm_finalizer(L, false);
      fin = true;
    }
    if (fin) st.fin_states++;
    sr->closing = true;
    t_in_close = true;
    g_close_ns[std::size_t(s)] = now_ns();
    std::uint64_t d0 = t_decoded;
    lua_close(L);
    g_close_ns[std::size_t(s)] = 0;
    t_in_close = false;
    st.fin_decoded += t_decoded - d0;
    st.states_closed++;
    after_close(s, slot, sr);
    t_sr = nullptr;
    for (int k = 0; k < NREGS; ++k) g_stale.push(sr->reg[k].load());
    if (t_rng() % 4 == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(t_rng() % 3000));
  }
  ::close(t_udp);
  g_states_exited.fetch_add(1);
}

// --- producers ---------------------------------------------------------------------

const long TIMEOUTS[] = {DSS_TIMEOUT_INFINITE, DSS_TIMEOUT_INFINITE, DSS_TIMEOUT_INFINITE,
                         0, 1, 1, 2, 5, 5, 20, 200, -7};

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
    int s = int(t_rng() % std::uint64_t(opt.states));
    Slot& slot = g_slots[std::size_t(s)];
    int k = int(t_rng() % NLIBS);
    // Unregister from a foreign thread, now and then.
    if (uniform() < 0.002) {
      RegRec* rr = slot_reg(s, k);
      int rc = rr ? unreg_rec(rr, BY_PRODUCER) : DSS_ERR_INVALID_UTILID;
      if (rc == DSS_SUCCESS) {
        st.unregs++;
        g_stale.push(rr);
      } else if (rc != DSS_ERR_INVALID_UTILID) {
        fail("unreg (producer) returned %d", rc);
      }
    }
    const DSS_api_2v0_t* a2 = api2();
    // queued(): live, stale and garbage ids, now and then.
    if (a2 && uniform() < 0.01) {
      static const std::uintptr_t garbage[] = {1, 0xdeadbeef, ~std::uintptr_t(0), 12345};
      std::uintptr_t id = uniform() < 0.5 ? slot_utilid(s, k) : g_stale.pick_id();
      long q = a2->queued(reinterpret_cast<void*>(id));
      if (q < 0 && q != DSS_ERR_INVALID_UTILID) fail("queued(%#" PRIxPTR ") returned %ld", id, q);
      q = a2->queued(reinterpret_cast<void*>(garbage[t_rng() % 4]));
      if (q != DSS_ERR_INVALID_UTILID) fail("queued(garbage) returned %ld", q);
      st.queued_calls++;
    }
    bool stale = uniform() < 0.03;
    std::uintptr_t id = 0;
    StateRec* sr = nullptr;
    RegRec* rr = nullptr;
    RegRec* stale_rr = nullptr;  // counts us in its stale_inflight
    if (stale) {
      stale_rr = g_stale.pick();
      if (stale_rr) {
        stale_rr->stale_inflight++;
        id = stale_rr->utilid;
      } else {
        stale = false;
      }
    }
    if (!stale) {
      sr = slot.rec.load();
      if (sr) {
        sr->inflight++;
        // unreg during decode: its registration is favoured; a
        // registration made during close now and then
        int fk = sr->flood_k.load();
        if (fk >= 0 && uniform() < 0.5) k = fk;
        else if (sr->reg[LATE_K].load() && uniform() < 0.3) k = LATE_K;
        rr = sr->reg[k].load();
      }
      id = rr ? rr->utilid : 0;
    }
    const DSS_api_1v0_t* a = api();
    if (!a) {  // no state opened yet
      g_items[idx].fetch_or(F_STARTED | F_REFUSED);
      if (sr) sr->inflight--;
      if (stale_rr) stale_rr->stale_inflight--;
      std::this_thread::yield();
      continue;
    }
    // Now and then a burst of fire-and-forget items, to build up queues.
    if (burst == 0 && uniform() < 0.01) burst = 1 + int(t_rng() % 400);
    bool blocking = burst ? (--burst, false) : uniform() < 0.4;
    int action;
    double r = uniform();
    if (!blocking) {
      action = r < 0.1 ? A_DEC0 : r < 0.13 ? A_RAISE : r < 0.15 ? A_DECRAISE : A_PUSH;
    } else {
      action = r < 0.1    ? A_DEC0
               : r < 0.45 ? A_CALL
               : r < 0.65 ? A_DROP
               : r < 0.9  ? A_HOLD
                          : A_CALL_TWICE;
    }
    // 1v0 deliver, or 2v0 deliver2 with flags and a timeout.
    bool v2 = a2 && uniform() < 0.6;
    unsigned flags = 0;
    long timeout = DSS_TIMEOUT_INFINITE;
    bool bad_flags = false;
    if (v2) {
      st.v2++;
      if (uniform() < 0.3) flags |= DSS_DELIVER_NOWAIT;
      if (uniform() < 0.01) {
        static const unsigned bad[] = {0x2u, 0x80000000u, 0xfffffffeu, 0x10u};
        flags |= bad[t_rng() % 4];
        bad_flags = true;
        st.bad_flags++;
      }
      timeout = TIMEOUTS[t_rng() % (sizeof TIMEOUTS / sizeof TIMEOUTS[0])];
    }
    Payload local = {MAGIC, std::uint32_t(idx), action, blocking,
                     reinterpret_cast<void*>(id), ANS_NONE, sr, rr};
    Payload* p = blocking ? &local : new Payload(local);
    (blocking ? st.blocking : st.ff)++;
    if (stale) st.stale++;

    g_items[idx].fetch_or(F_STARTED);
    std::uint64_t gen1 = g_window_gen.load();
    std::int64_t t0 = now_ns();
    me.enter_ns.store(t0);
    t_delivering = p;
    int rc = v2 ? a2->deliver2(reinterpret_cast<void*>(id), stress_decode,
                               blocking ? stress_ret : nullptr, p, flags, timeout)
                : a->deliver(reinterpret_cast<void*>(id), stress_decode,
                             blocking ? stress_ret : nullptr, p);
    t_delivering = nullptr;
    std::int64_t t1 = now_ns();
    me.enter_ns.store(0);
    me.calls.fetch_add(1);
    std::uint64_t gen2 = g_window_gen.load();
    bool in_window = (gen1 & 1) && gen1 == gen2;  // all states closed throughout
    if (in_window) st.window_delivers++;
    if (timeout >= 0 && double(t1 - t0) / 1e6 > double(timeout) + 10000 * opt.scale)
      fail("item %" PRIu64 ": deliver2 with timeout %ld ms took %.0f ms", idx, timeout,
           double(t1 - t0) / 1e6);

    // Did it queue the item? A TIMEOUT after the item was queued did.
    bool queued = rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED ||
                  (v2 && blocking && rc == DSS_ERR_CANCELLED) ||
                  (v2 && blocking && rc == DSS_ERR_TIMEOUT && local.answer == ANS_TIMEDOUT);
    if (queued) {
      st.accepted++;
      if (sr) sr->accepted++;
      std::uint8_t old = g_items[idx].fetch_or(F_ACCEPTED);
      if (stale) fail("item %" PRIu64 ": stale utilid %#" PRIxPTR " accepted", idx, id);
      if (in_window) fail("item %" PRIu64 ": accepted while all states were closed", idx);
      if (bad_flags) fail("item %" PRIu64 ": flags %#x accepted (rc %d)", idx, flags, rc);
      if (rc == DSS_ERR_CANCELLED) st.cancelled_v2++;
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
          case ANS_TIMEDOUT: ok = rc == DSS_ERR_TIMEOUT; break;
          default: ok = false;
        }
        // What deliver2 returns says how the item ended.
        if (v2 && (local.answer == ANS_CANCELLED) != (rc == DSS_ERR_CANCELLED)) ok = false;
        if (v2 && (local.answer == ANS_TIMEDOUT) != (rc == DSS_ERR_TIMEOUT)) ok = false;
        if (!ok)
          fail("item %" PRIu64 ": released with rc %d, answer %d for action %d", idx,
               rc, local.answer, action);
      }
      if (sr) sr->inflight--;
      if (stale_rr) stale_rr->stale_inflight--;
    } else {
      st.refused++;
      if (rc == DSS_ERR_NOT_STARTED) st.not_started++;
      std::uint8_t old = g_items[idx].fetch_or(F_REFUSED);
      if (old & (F_ENDS | F_DECODES))
        fail("item %" PRIu64 ": refused (%d) but its callbacks ran", idx, rc);
      bool ok = rc == DSS_ERR_INVALID_UTILID || rc == DSS_ERR_NOT_STARTED;
      if (v2) {
        bool room = rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT;
        if (rc == DSS_ERR_QUEUE_FULL) {
          st.queue_full++;
          ok = (flags & DSS_DELIVER_NOWAIT) || timeout == 0;
        } else if (rc == DSS_ERR_TIMEOUT) {
          st.timeout_noroom++;
          ok = timeout >= 0;
        } else if (rc == DSS_ERR_INVALID_ARGUMENT) {
          ok = bad_flags;
        }
        if (room && bad_flags) ok = false;
        if (room && sr) sr->rejected++;
      }
      if (!ok) fail("item %" PRIu64 ": deliver%s returned %d (flags %#x, timeout %ld)", idx,
                    v2 ? "2" : "", rc, flags, timeout);
      if ((stale || in_window) && rc != DSS_ERR_INVALID_UTILID &&
          !(bad_flags && rc == DSS_ERR_INVALID_ARGUMENT))
        fail("item %" PRIu64 ": stale utilid: deliver returned %d, not INVALID_UTILID", idx, rc);
      if (sr) sr->inflight--;
      if (stale_rr) stale_rr->stale_inflight--;
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
  auto deadline = Clock::now() + std::chrono::milliseconds(std::int64_t(10000 * opt.scale));
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
  deadline = Clock::now() + std::chrono::milliseconds(std::int64_t(10000 * opt.scale));
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

  // Stale utilids, through the API pointers obtained earlier.
  const DSS_api_2v0_t* a2 = api2();
  if (a) {
    if (std::strcmp(a->version, DSS_API_1v0_KEY) != 0)
      fail("all states closed: the API struct's version reads '%s'", a->version);
    for (int i = 0; i < 8; ++i) {
      std::uintptr_t id = i < opt.states * NLIBS ? slot_utilid(i / NLIBS, i % NLIBS)
                                                 : g_stale.pick_id();
      // A utilid still registered (its hub never closed) would keep a
      // blocking probe here for good, or queue one that lives on this stack.
      if (a2) {
        long q = a2->queued(reinterpret_cast<void*>(id));
        if (q != DSS_ERR_INVALID_UTILID) {
          fail("all states closed: queued(stale %#" PRIxPTR ") returned %ld: still registered",
               id, q);
          continue;
        }
      }
      Payload probe = {MAGIC, PROBE, A_CALL, i % 2 == 1, reinterpret_cast<void*>(id), ANS_NONE,
                       nullptr, nullptr};
      int rc = a->deliver(reinterpret_cast<void*>(id), stress_decode,
                          probe.blocking ? stress_ret : nullptr, &probe);
      if (rc != DSS_ERR_INVALID_UTILID)
        fail("all states closed: deliver(stale %#" PRIxPTR ") returned %d", id, rc);
      if (a2) {
        rc = a2->deliver2(reinterpret_cast<void*>(id), stress_decode,
                          probe.blocking ? stress_ret : nullptr, &probe,
                          i < 4 ? 0u : DSS_DELIVER_NOWAIT, i % 3 == 0 ? 0 : 50);
        if (rc != DSS_ERR_INVALID_UTILID)
          fail("all states closed: deliver2(stale %#" PRIxPTR ") returned %d", id, rc);
        long q = a2->queued(reinterpret_cast<void*>(id));
        if (q != DSS_ERR_INVALID_UTILID)
          fail("all states closed: queued(stale %#" PRIxPTR ") returned %ld", id, q);
      }
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
               "              [--max-open-ms MS] [--module-dir DIR]\n"
               "              [--finalizer-prob P] [--flood-prob P]\n"
               "  --finalizer-prob P  share of closes with draining finalizers (0.2)\n"
               "  --flood-prob P      share of states with an unreg during decode (0.1)\n");
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
    } else if (a == "--finalizer-prob") {
      opt.fin_prob = std::atof(v);
    } else if (a == "--flood-prob") {
      opt.flood_prob = std::atof(v);
    } else {
      usage();
    }
  }
  if (opt.producers < 1 || opt.states < 1 || opt.max_open_ms < 1 ||
      opt.items > 0xfffffff0u || !(opt.fin_prob >= 0 && opt.fin_prob <= 1) ||
      !(opt.flood_prob >= 0 && opt.flood_prob <= 1))
    usage();
  if (!opt.seed_given) {
    std::random_device rd;
    opt.seed = (std::uint64_t(rd()) << 32 | rd()) % 1000000000u;
  }
  if (const char* sc = std::getenv("DSS_TEST_TIMESCALE")) {
    double v = std::atof(sc);
    if (v >= 1) opt.scale = v;
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
      " max_queue_depth=%" PRIu64
      " deliver2=%" PRIu64 " timedout_queued=%" PRIu64 " timedout_pending=%" PRIu64
      " queue_full=%" PRIu64 " timeout_noroom=%" PRIu64 " cancelled_v2=%" PRIu64
      " bad_flags=%" PRIu64 " queued_calls=%" PRIu64 " deadlock_probes=%" PRIu64
      " raised=%" PRIu64 " dispatched=%" PRIu64 " waits=%" PRIu64 " wait_timeouts=%" PRIu64
      " fd_wakeups=%" PRIu64 " fd_spurious=%" PRIu64 " datagrams=%" PRIu64
      " coalesce_modes=%" PRIu64 " mode_switches=%" PRIu64 " maxqueue_changes=%" PRIu64
      " stats_checks=%" PRIu64 " own_items=%" PRIu64
      " fin_states=%" PRIu64 " fin_runs=%" PRIu64 " fin_decoded=%" PRIu64
      " fin_regs=%" PRIu64 " fin_reg_refused=%" PRIu64 " fin_items=%" PRIu64
      " cancel_checks=%" PRIu64 " floods=%" PRIu64 " flood_items=%" PRIu64
      " decode_unregs=%" PRIu64 " unreg_overlaps=%" PRIu64 " unreg_spanning=%" PRIu64
      " lost=%" PRIu64 " doubled=%" PRIu64 " hung=%d late=%" PRIu64
      " errors=%d duration=%.1fs\n",
      opt.seed, r.issued, st.accepted.load(), st.refused.load(), st.not_started.load(),
      st.blocking.load(), st.ff.load(), st.states_opened.load(),
      st.states_closed.load(), st.windows.load(), st.cancels.load(),
      st.client_cancels.load(), st.releases.load(), st.returned.load(),
      st.garbage.load(), st.decoded.load(), st.dec0.load(), st.unregs.load(),
      st.reregs.load(), st.stale.load(), st.max_queue.load(), st.v2.load(),
      st.timedout_queued.load(), st.timedout_pending.load(), st.queue_full.load(),
      st.timeout_noroom.load(), st.cancelled_v2.load(), st.bad_flags.load(),
      st.queued_calls.load(), st.deadlock_probes.load(), st.raised.load(),
      st.dispatched.load(), st.waits.load(), st.wait_timeouts.load(), st.fd_wakeups.load(),
      st.fd_spurious.load(), st.datagrams.load(), st.coalesce_modes.load(),
      st.mode_switches.load(), st.maxqueue_changes.load(), st.stats_checks.load(),
      st.self_items.load(), st.fin_states.load(), st.fin_runs.load(), st.fin_decoded.load(),
      st.fin_regs.load(), st.fin_reg_refused.load(), st.fin_items.load(),
      st.cancel_checks.load(), st.floods.load(), st.flood_items.load(),
      st.decode_unregs.load(), st.unreg_overlaps.load(), st.unreg_spanning.load(), r.lost,
      r.doubled, st.hung.load(), st.late.load(), g_errors.load(), secs);
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
  g_prod.reset(new ProducerInfo[std::size_t(opt.producers)]);
  g_close_ns.reset(new std::atomic<std::int64_t>[std::size_t(opt.states)]());

  auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::vector<std::thread> threads;
  for (int s = 0; s < opt.states; ++s) threads.emplace_back(state_thread, s);
  for (int p = 0; p < opt.producers; ++p) threads.emplace_back(producer_thread, p);
  threads.emplace_back(unreg_thread);

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
    for (int s = 0; s < opt.states; ++s) {
      std::int64_t e = g_close_ns[std::size_t(s)].load();
      if (e && double(now - e) / 1e9 > opt.hang_seconds) {
        fail("state %d inside lua_close for more than %.0f s", s, opt.hang_seconds);
        st.hung++;
      }
    }
    std::int64_t ue = g_unreg_enter_ns.load();
    if (ue && double(now - ue) / 1e9 > opt.hang_seconds) {
      fail("the unreg-during-decode thread inside unreg for more than %.0f s", opt.hang_seconds);
      st.hung++;
    }
    bool done = g_producers_exited.load() == opt.producers &&
                g_states_exited.load() == opt.states && g_unreg_exited.load();
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
  bool passed = g_errors.load() == 0 && st.hung.load() == 0 && st.late.load() == 0;
  summary(r, secs, passed);
  return passed ? 0 : 1;
}
