// runner.h -- what the stress harness's files share (see stress.cpp for the
// checks and the file list): the options, failures and counters, the items'
// records, the client-side API plumbing, the embedded Lua state helpers and
// the scenarios' entry points.
#pragma once

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "darksidesync_api.h"

namespace stress {

using Clock = std::chrono::steady_clock;

// --- options (runner.cpp) ----------------------------------------------------

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
  int session_hosts = 1;          // threads running sessions rounds
  double session_traffic = 0;     // a round's traffic time (s); 0: 0.1 to 0.6
  std::uint64_t session_round_seed = 0;  // run this one round only
  std::string module_dir;
};
extern Options opt;

void parse(int argc, char** argv);
std::int64_t now_ns();
// A deadline ms milliseconds from now, stretched by DSS_TEST_TIMESCALE.
Clock::time_point deadline_ms(double ms);
void sleep_us(std::int64_t us);
// Records a failure (prints the first 30); g_errors counts them.
void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
extern std::atomic<int> g_errors;

// The calling thread's random numbers.
extern thread_local std::mt19937_64 t_rng;
double uniform();

// --- counters and the report (report.cpp) -------------------------------------

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
extern Stats st;

void update_max(std::atomic<std::uint64_t>& m, std::uint64_t v);

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
extern std::unique_ptr<std::atomic<std::uint8_t>[]> g_items;
extern std::atomic<std::uint64_t> g_next_item;

// Marks item idx refused with rc; fails if a callback of it ran.
void refuse_item(std::uint64_t idx, int rc);

// The items' fates, counted from their flags at the end.
struct Result {
  std::uint64_t issued = 0, lost = 0, doubled = 0, refused_called = 0,
                unfinished = 0;
};
Result account();
void summary(const Result& r, double secs, bool passed);

// --- items ------------------------------------------------------------------

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

// A fire-and-forget item's action (the same odds everywhere).
int ff_action();

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
  void* id() const { return reinterpret_cast<void*>(utilid); }
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

StateRec* new_rec();
// A record for producers after sr went quiet or closed: the same (stale
// from now on) registrations.
StateRec* tomb_of(StateRec* sr);

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
extern thread_local const Payload* t_delivering;
// Decoders run with a Lua state on this thread, and those that raised.
extern thread_local std::uint64_t t_decoded, t_decraised;
// Set on a state thread while it is inside lua_close.
extern thread_local bool t_in_close;

// --- the client side of the API (client.cpp) ---------------------------------

extern "C" {
int stress_decode(lua_State* L, void* pData, void* utilid);
int stress_ret(lua_State* L, void* pData, void* utilid, int garbage);
void stress_cancel(void* utilid);
}

const DSS_api_1v0_t* api();
const DSS_api_2v0_t* api2();
// Finds the API structs in L's registry (and checks they never move).
bool find_api(lua_State* L);

extern const char g_libids[NLIBS];  // libids: their addresses
extern const char g_self_libid;     // a state's own library (quiet moments)
extern const char g_late_libid;     // registered by a finalizer during close

// Who called unreg.
enum { BY_PRODUCER = 1, BY_LUA_THREAD, BY_QUIET, BY_CANCEL, BY_UNREG_THREAD };

// A record for a registration just made in owner's state (its state thread).
RegRec* new_reg(void* utilid, StateRec* owner);
RegRec* find_reg(void* utilid);
// unreg of rr's utilid, recorded in rr.
int unreg_rec(RegRec* rr, int by);
// unreg of rr (may be null) by `by`: counted and made stale on SUCCESS,
// INVALID_UTILID let through, any other code a failure (`what`).
void unreg_counted(RegRec* rr, int by, const char* what);
// Makes sure lib k is registered in L; publishes its utilid in sr.
void ensure_registered(lua_State* L, StateRec* sr, int k);
// A fire-and-forget item from this (the state's) thread to rr, counted as a
// producer's would be. Returns deliver2's code, or 1 when the run's item
// budget is spent.
int self_deliver(StateRec* sr, RegRec* rr);
bool delivered(int rc);  // SUCCESS or UDP_SEND_FAILED: queued

// Registrations unregistered, or of closed states.
struct StaleList {
  std::mutex mu;
  RegRec* regs[256] = {};
  std::size_t n = 0;
  void push(RegRec* rr);
  RegRec* pick();
  std::uintptr_t pick_id();
};
extern StaleList g_stale;

// What each state thread publishes.
struct Slot {
  std::atomic<StateRec*> rec{nullptr};
};
extern std::unique_ptr<Slot[]> g_slots;
std::uintptr_t slot_utilid(int s, int k);
RegRec* slot_reg(int s, int k);

// Returns whether darksidesync.so is mapped, and whether it holds addr.
bool module_mapped(const void* addr, bool* contains);

// --- the embedded Lua state (lua_host.cpp, driver.cpp) ------------------------

// The driver's functions, kept in the registry.
extern const char* const CB_KEY;
extern const char* const STEP_KEY;
extern const char* const MODE_KEY;
extern const char* const REPORT_KEY;
extern const char* const DSS_KEY;
extern const char* const ARM_KEY;
extern const char* const UNBOUND_KEY;
extern const char* const DRIVER;  // its source

// The state thread's current state (for the helpers a finalizer calls).
extern thread_local StateRec* t_sr;
extern thread_local Slot* t_slot;
// This state thread's UDP socket.
extern thread_local int t_udp;

// Opens a state as a client library's host would. Returns nullptr on failure.
lua_State* open_state(std::uint64_t lua_seed);
bool lua_do(lua_State* L, int nargs, int nres, const char* what);
// darksidesync.<fn>() as an integer, or -1 (reported) if it raised.
long long dcall_int(lua_State* L, const char* fn,
                    std::initializer_list<lua_Number> args = {});

struct DssStats {
  std::uint64_t delivered, decoded, returned, cancelled, timedout, rejected,
      notified, notifyfailed, queued, maxqueued, blocked;
};
bool get_stats(lua_State* L, DssStats* s);

int pick_mode();
// Sets how the state drains (see setmode in the driver).
bool set_mode(lua_State* L, int mode, int port);
// Adds the driver's counters to the totals; returns the wake-up fd, or -1.
int collect_report(lua_State* L);
bool fd_readable(int fd);

// --- the scenarios ------------------------------------------------------------

// scenario_states.cpp: a state thread opens, drains and closes states.
extern std::unique_ptr<std::atomic<std::int64_t>[]> g_close_ns;  // in lua_close since
void state_thread(int s);

// scenario_producers.cpp: producer threads deliver items.
struct ProducerInfo {
  std::atomic<std::int64_t> enter_ns{0};  // inside deliver since, or 0
  std::atomic<std::uint64_t> calls{0};    // delivers returned
};
extern std::unique_ptr<ProducerInfo[]> g_prod;
void producer_thread(int pi);

// scenario_quiet.cpp: a quiet moment before a state closes.
void quiet_check(lua_State* L, Slot& slot, StateRec* sr);

// scenario_all_closed.cpp: moments when every state is closed.
extern std::atomic<bool> g_stop;
extern std::atomic<int> g_states_exited;
extern std::atomic<int> g_producers_exited;
extern std::atomic<std::uint64_t> g_window_gen;  // odd while all are closed
void wait_window();  // a state thread, between two states
void do_window();    // the main thread

// scenario_finalizer.cpp: close with a draining finalizer.
extern thread_local std::string t_plans;  // the state's plans, for messages
// Now and then (if ok: the state works) an object made as the state opens
// (early), or one to three made after its last poll; whether it made any.
bool finalizers_at_open(lua_State* L, bool ok);
bool finalizers_at_close(lua_State* L, bool ok);
void push_finalizer_helpers(lua_State* L);  // into the table H on the stack

// scenario_unreg_decode.cpp: unreg during decode.
extern std::atomic<std::int64_t> g_unreg_enter_ns;  // inside unreg since, or 0
extern std::atomic<bool> g_unreg_exited;
void flood(lua_State* L, StateRec* sr);
void unreg_thread();

// scenario_sessions.cpp: sessions and channels, exact accounting.
extern const char* const SESS_BODY;  // sessions_lua.cpp
extern const char* const SESS_HOST;
extern std::atomic<int> g_hosts_exited;
extern std::unique_ptr<std::atomic<std::int64_t>[]> g_round_ns;  // in a round since
void session_host_thread(int h);
void sessions_summary();

}  // namespace stress
