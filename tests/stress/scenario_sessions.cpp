// scenario_sessions.cpp -- sessions and channels, with exact accounting
// (see stress.cpp; the Lua side is sessions_lua.cpp).
//
// A session host thread runs rounds, one after the other. A round opens a
// main state, which spawns 17 to 40 sessions on a pool of 1 to 3 threads,
// connected by 6 to 13 channels (rendezvous, buffered, unbounded). Each
// session runs 1 to 4 fibers that get from some channels (a get, or a
// choice of gets, with a timeout now and then) and forward what they get
// into others (a put, or a choice of puts, with or without a timeout), or
// eat it. One or two C producer threads put numbered messages into the
// channels through the 2v2 API (channel_retain, channel_put in blocking,
// timed and no-wait forms). Meanwhile the host cancels sessions at random,
// closes a channel or two and spawns late sessions; then it stops the
// producers, closes every channel, joins every session (bounded), drains
// what the channels still hold, and the round's accounting runs.
//
// Every message is one id at one hop. Sessions report each receipt before
// anything else, on a channel of receipts the host records here, and each
// forward, eat or drop. For every id the producer put successfully, its
// receipts must be hops 0..H, each once, and it must end exactly once:
// eaten or dropped (every forward met a closed channel) by the session that
// received hop H, or drained by the host at hop H + 1. An id with no end
// is allowed only where a cancelled session explains it: held by the
// cancelled session that received hop H (and did not report a forward);
// each fiber of a cancelled session accounts for at most one such id. A
// get that completed for a cancelled session's fiber is never lost: the
// fiber gets the value (the cancellation takes the completed op's result)
// or, when its state closes first, the value goes back to its channel.
// Anything else is lost; an id received twice at one hop, or ended twice, is doubled.
// An id the producer failed to put (full, timed out, closed) must never be
// seen. Every session must end within the bounded join: a session that
// returned reports its counts, which must equal the receipts recorded for
// it; one cancelled ends "cancelled" (or returns, if it ended first).
//
// Written so as not to depend on what a cancelled session's fibers do:
// whether they are dropped with the state or resume with an error, a
// message they hold or were about to receive is accounted as above.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>

#include "runner.h"

#ifndef DSS_STRESS_LUA_DIR
#define DSS_STRESS_LUA_DIR "lua"
#endif

namespace stress {

std::atomic<int> g_hosts_exited{0};
std::unique_ptr<std::atomic<std::int64_t>[]> g_round_ns;

namespace {

// The run's totals, for the summary.
struct SessStats {
  std::atomic<std::uint64_t> rounds{0}, spawned{0}, done{0}, cancelled{0}, cancel_reqs{0},
      cancel_late{0}, errors{0}, hung{0}, issued{0}, sent{0}, full{0}, timedout{0},
      closed{0}, blocking{0}, timed{0}, nowait{0}, receipts{0}, forwards{0}, eaten{0},
      dropped{0}, drained{0}, held{0}, lost{0}, doubled{0}, chan_closes{0},
      put_timeouts{0}, get_timeouts{0};
};
SessStats ss;

const std::uint64_t ROUND_IDS = 60000;  // at most, per round

enum { K_RECV = 1, K_FWD, K_EAT, K_DROP, K_DRAIN };
enum { E_NONE = 0, E_DONE, E_CANCELLED, E_ERROR, E_HUNG };

struct IdRec {
  std::uint64_t recv = 0;  // hops received (a bit each)
  std::uint64_t fwd = 0;   // hops forwarded (put returned true)
  std::int16_t last_sid = -1, fwd_ch = -1, term_sid = -1;
  std::int8_t last_hop = -1, fwd_hop = -1, term_hop = -1;
  std::uint8_t nterm = 0, term_kind = 0, dup = 0;
};

struct SessRec {
  int fibers = 0;
  std::vector<std::pair<int, int>> reads;  // channels its fibers read, how many each
  bool spawned = false, cancel_req = false;
  int end = E_NONE;
  std::uint64_t ret[6] = {};      // what it returned
  std::uint64_t rec[K_DRAIN] = {};  // receipts recorded for it, by kind
  int held = 0;
};

struct Round {
  std::uint64_t seed = 0;
  int host = 0;
  std::uint64_t base = 0;  // the round's first id
  const DSS_api_2v2_t* api = nullptr;
  std::atomic<std::uint64_t> next{0};  // ids issued (offsets)
  // Per id offset: channel + 1 once put, -1 refused, 0 not (yet) issued.
  std::unique_ptr<std::atomic<std::int16_t>[]> put_ch;
  std::vector<IdRec> ids;
  std::vector<SessRec> sess;  // by sid (0 unused)
  std::vector<int> caps;      // by channel (0 unused); -1 unbounded
  std::vector<std::pair<int, void*>> targets;  // channel, reference
  std::atomic<bool> stop{false};
  std::atomic<int> running{0};
  std::vector<std::thread> producers;
  std::uint64_t full = 0, timedout = 0, closed = 0, sent = 0;
  std::mutex mu;  // the producers' counts above
  std::atomic<bool> broken{false};  // a failure was reported: its seed is printed

  SessRec& s(lua_State* L, int sid) {
    if (sid < 1 || sid > 1000) luaL_error(L, "sessions: bad sid %d", sid);
    if (std::size_t(sid) >= sess.size()) sess.resize(std::size_t(sid) + 1);
    return sess[std::size_t(sid)];
  }
};

thread_local Round* t_round = nullptr;

// A failure of round R: reported with its seed (printed again at its end).
void rfail(Round* R, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void rfail(Round* R, const char* fmt, ...) {
  R->broken = true;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fail("sessions (host %d, round seed %" PRIu64 "): %s", R->host, R->seed, buf);
}
#define RFAIL rfail

// --- the C producers ---------------------------------------------------------------

void producer(Round* R, int p) {
  std::mt19937_64 rng(R->seed * 7919u + std::uint64_t(p));
  std::uint64_t full = 0, timedout = 0, closed = 0, sent = 0;
  while (!R->stop.load()) {
    std::uint64_t i = R->next.fetch_add(1);
    if (i >= ROUND_IDS) break;
    const auto& tg = R->targets[rng() % R->targets.size()];
    long long v = static_cast<long long>(R->base + i) * 64;
    char pad[24];
    int len = std::snprintf(pad, sizeof pad, "p%d:%" PRIu64, p, i);
    DSS_value_t vals[3] = {DSS_vinteger(v), DSS_vlstring(pad, std::size_t(len)),
                           DSS_vnumber(0.5)};
    int nv = 1 + int(rng() % 3);
    unsigned flags = 0;
    long timeout = DSS_TIMEOUT_INFINITE;
    int mode = int(rng() % 10);
    if (mode < 4) {
      ss.blocking++;
    } else if (mode < 8) {
      timeout = long(rng() % 20);
      ss.timed++;
    } else {
      flags = DSS_DELIVER_NOWAIT;
      ss.nowait++;
    }
    int rc = R->api->channel_put(tg.second, vals, nv, flags, timeout);
    if (rc == DSS_SUCCESS) {
      R->put_ch[i] = std::int16_t(tg.first + 1);
      ++sent;
    } else {
      R->put_ch[i] = -1;
      if (rc == DSS_ERR_QUEUE_FULL) ++full;
      else if (rc == DSS_ERR_TIMEOUT) ++timedout;
      else if (rc == DSS_ERR_CLOSED) ++closed;
      else RFAIL(R, "channel_put returned %d (%s)", rc, "unexpected");
    }
  }
  std::lock_guard<std::mutex> lock(R->mu);
  R->full += full;
  R->timedout += timedout;
  R->closed += closed;
  R->sent += sent;
  R->running--;
}

void join_producers(Round* R) {
  R->stop = true;
  for (std::thread& th : R->producers) th.join();
  R->producers.clear();
  for (auto& tg : R->targets) R->api->channel_release(tg.second);
  R->targets.clear();
}

// --- the helpers the host script calls (table H) -------------------------------

int arg_int(lua_State* L, int i) { return int(luaL_checknumber(L, i)); }

extern "C" {

static int h_channel(lua_State* L) {
  Round* R = t_round;
  int c = arg_int(L, 1);
  if (c < 1 || c > 100) return luaL_error(L, "sessions: bad channel %d", c);
  if (std::size_t(c) >= R->caps.size()) R->caps.resize(std::size_t(c) + 1, 0);
  R->caps[std::size_t(c)] = arg_int(L, 2);
  return 0;
}

static int h_fiber(lua_State* L) {
  t_round->s(L, arg_int(L, 1)).fibers++;
  return 0;
}

static int h_reads(lua_State* L) {
  SessRec& s = t_round->s(L, arg_int(L, 1));
  int c = arg_int(L, 2);
  for (auto& x : s.reads)
    if (x.first == c) {
      x.second++;
      return 0;
    }
  s.reads.emplace_back(c, 1);
  return 0;
}

// target(c, handle): the producers put into channel c.
static int h_target(lua_State* L) {
  Round* R = t_round;
  int err = 0;
  void* ref = R->api->channel_retain(L, 2, &err);
  if (!ref || err != DSS_SUCCESS) return luaL_error(L, "sessions: channel_retain: %d", err);
  R->targets.emplace_back(arg_int(L, 1), ref);
  return 0;
}

static int h_spawned(lua_State* L) {
  t_round->s(L, arg_int(L, 1)).spawned = true;
  ss.spawned++;
  return 0;
}

static int h_start(lua_State* L) {
  Round* R = t_round;
  int n = arg_int(L, 1);
  if (R->targets.empty()) return 0;
  for (int p = 0; p < n; ++p) {
    R->running++;
    R->producers.emplace_back(producer, R, p);
  }
  return 0;
}

static int h_cancel(lua_State* L) {
  t_round->s(L, arg_int(L, 1)).cancel_req = true;
  ss.cancel_reqs++;
  return 0;
}

static int h_closed(lua_State*) {
  ss.chan_closes++;
  return 0;
}

static int h_stop(lua_State*) {
  t_round->stop = true;
  return 0;
}

static int h_running(lua_State* L) {
  lua_pushboolean(L, t_round->running.load() > 0);
  return 1;
}

static int h_join(lua_State*) {
  join_producers(t_round);
  return 0;
}

// rec(kind, id, hop, sid, channel): a receipt.
static int h_rec(lua_State* L) {
  Round* R = t_round;
  int kind = arg_int(L, 1);
  lua_Number idn = luaL_checknumber(L, 2);
  int hop = arg_int(L, 3), sid = arg_int(L, 4), c = arg_int(L, 5);
  std::uint64_t id = std::uint64_t(idn);
  if (idn < 0 || id < R->base || id - R->base >= ROUND_IDS || hop < 0 || hop > 62 ||
      kind < K_RECV || kind > K_DRAIN) {
    RFAIL(R, "a receipt (%d, %.0f, %d, %d, %d) out of range", kind, double(idn), hop, sid, c);
    return 0;
  }
  std::uint64_t i = id - R->base;
  IdRec& r = R->ids[i];
  std::uint64_t bit = std::uint64_t(1) << hop;
  if (kind != K_DRAIN) R->s(L, sid).rec[kind - 1]++;
  switch (kind) {
    case K_RECV:
      ss.receipts++;
      if (r.recv & bit) {
        ++r.dup;
        RFAIL(R, "id %" PRIu64 " received twice at hop %d (sid %d, channel %d)", id, hop,
              sid, c);
      }
      r.recv |= bit;
      if (hop > r.last_hop) {
        r.last_hop = std::int8_t(hop);
        r.last_sid = std::int16_t(sid);
      }
      break;
    case K_FWD:
      ss.forwards++;
      if (r.fwd & bit) {
        ++r.dup;
        RFAIL(R, "id %" PRIu64 " forwarded twice at hop %d (sid %d)", id, hop, sid);
      }
      r.fwd |= bit;
      if (hop > r.fwd_hop) {
        r.fwd_hop = std::int8_t(hop);
        r.fwd_ch = std::int16_t(c);
      }
      break;
    default:
      if (kind == K_EAT) ss.eaten++;
      else if (kind == K_DROP) ss.dropped++;
      else ss.drained++;
      if (r.nterm++) {
        RFAIL(R, "id %" PRIu64 " ended twice: kind %d hop %d sid %d, then kind %d hop %d sid %d",
              id, r.term_kind, r.term_hop, r.term_sid, kind, hop, sid);
      }
      r.term_kind = std::uint8_t(kind);
      r.term_hop = std::int8_t(hop);
      r.term_sid = std::int16_t(sid);
      break;
  }
  return 0;
}

// joined(sid, how, status, ...): how the join of sid ended; "done" with
// the six counts, "error" and "cancelled" with the message.
static int h_joined(lua_State* L) {
  Round* R = t_round;
  int sid = arg_int(L, 1);
  SessRec& s = R->s(L, sid);
  std::string how = luaL_checkstring(L, 2);
  const char* status = luaL_optstring(L, 3, "?");
  if (s.end != E_NONE) RFAIL(R, "session %d joined twice", sid);
  if (how == "done") {
    s.end = E_DONE;
    ss.done++;
    if (s.cancel_req) ss.cancel_late++;
    for (int k = 0; k < 6; ++k) s.ret[k] = std::uint64_t(luaL_checknumber(L, 4 + k));
    ss.put_timeouts += s.ret[4];
    ss.get_timeouts += s.ret[5];
    if (std::strcmp(status, "done") != 0)
      RFAIL(R, "session %d returned, its status says %s", sid, status);
  } else if (how == "cancelled") {
    s.end = E_CANCELLED;
    ss.cancelled++;
    if (!s.cancel_req) RFAIL(R, "session %d ended cancelled, never cancelled", sid);
    if (std::strcmp(status, "cancelled") != 0)
      RFAIL(R, "session %d joined cancelled, its status says %s", sid, status);
  } else if (how == "hung") {
    s.end = E_HUNG;
    ss.hung++;
    st.hung++;
    RFAIL(R, "session %d did not end (join timed out; status %s)", sid, status);
  } else {
    s.end = E_ERROR;
    ss.errors++;
    RFAIL(R, "session %d failed (status %s): %s", sid, status, luaL_optstring(L, 4, "?"));
  }
  return 0;
}

static int h_fail(lua_State* L) {
  RFAIL(t_round, "lua: %s", luaL_checkstring(L, 1));
  return 0;
}

}  // extern "C"

void push_host_helpers(lua_State* L) {
  lua_newtable(L);
  const luaL_Reg fns[] = {{"channel", h_channel}, {"fiber", h_fiber},   {"reads", h_reads},
                          {"target", h_target},   {"spawned", h_spawned}, {"start", h_start},
                          {"cancel", h_cancel},   {"closed", h_closed}, {"stop", h_stop},
                          {"running", h_running}, {"join", h_join},     {"rec", h_rec},
                          {"joined", h_joined},   {"fail", h_fail}};
  for (const luaL_Reg& f : fns) {
    lua_pushcfunction(L, f.func);
    lua_setfield(L, -2, f.name);
  }
}

// --- the accounting ------------------------------------------------------------------

// Who reads channel c: "sid:how" each (d done, c cancelled, e error, h
// hung), for messages.
std::string readers(const Round* R, int c) {
  std::string out;
  for (std::size_t sid = 1; sid < R->sess.size(); ++sid)
    for (auto& x : R->sess[sid].reads)
      if (x.first == c) {
        static const char ends[] = "-dceh";
        out += " " + std::to_string(sid) + ":" + ends[R->sess[sid].end] +
               (R->sess[sid].cancel_req ? "!" : "");
      }
  return out.empty() ? " none" : out;
}

void account_round(Round* R) {
  std::uint64_t issued = std::min<std::uint64_t>(R->next.load(), ROUND_IDS);
  std::uint64_t sent = 0, ended = 0, held = 0, lost = 0, doubled = 0;
  for (std::uint64_t i = 0; i < issued; ++i) {
    const IdRec& r = R->ids[i];
    std::uint64_t id = R->base + i;
    int pc = R->put_ch[i].load();
    if (pc == 0) {
      RFAIL(R, "id %" PRIu64 ": its put never returned", id);
      continue;
    }
    if (pc < 0) {
      if (r.recv || r.fwd || r.nterm) {
        RFAIL(R, "id %" PRIu64 ": its put failed, yet it was seen", id);
        ++doubled;
      }
      continue;
    }
    ++sent;
    int H = r.last_hop;
    std::uint64_t chain = H < 0 ? 0 : (H >= 63 ? ~std::uint64_t(0) : (std::uint64_t(1) << (H + 1)) - 1);
    if (r.dup || r.nterm > 1) {
      ++doubled;
      continue;
    }
    if (r.recv != chain)
      RFAIL(R, "id %" PRIu64 ": received at hops %#" PRIx64 ", not 0..%d", id, r.recv, H);
    if (r.nterm == 1) {
      ++ended;
      if (r.term_kind == K_DRAIN) {
        if (r.term_hop != H + 1)
          RFAIL(R, "id %" PRIu64 ": drained at hop %d, last received at %d", id, r.term_hop, H);
      } else if (r.term_hop != H || r.term_sid != r.last_sid) {
        RFAIL(R, "id %" PRIu64 ": ended (kind %d) at hop %d by %d, last received at %d by %d",
              id, r.term_kind, r.term_hop, r.term_sid, H, r.last_sid);
      }
      continue;
    }
    // No end: a cancelled session must explain it.
    bool fwd_last = H >= 0 && r.fwd_hop == H + 1;
    if (H >= 0 && !fwd_last && R->sess[std::size_t(r.last_sid)].end == E_CANCELLED) {
      ++held;
      R->sess[std::size_t(r.last_sid)].held++;
      continue;
    }
    int c = H < 0 ? pc - 1 : (fwd_last ? r.fwd_ch : -1);
    ++lost;
    if (lost <= 5)
      RFAIL(R, "id %" PRIu64 " lost: put into %d, received at hops %#" PRIx64
               " (last by %d), forwarded at hops %#" PRIx64 " (last into %d); its"
               " channel %d is read by%s (sid:end, d done, c cancelled, ! cancel asked)",
            id, pc - 1, r.recv, r.last_sid, r.fwd, r.fwd_ch, c, readers(R, c).c_str());
  }
  // A fiber of a cancelled session holds, or is about to get, one at most.
  std::uint64_t fibers = 0;
  for (std::size_t sid = 1; sid < R->sess.size(); ++sid) {
    const SessRec& s = R->sess[sid];
    if (!s.spawned) continue;
    if (s.end == E_NONE) RFAIL(R, "session %zu was never joined", sid);
    if (s.end == E_CANCELLED) fibers += std::uint64_t(s.fibers);
    if (s.held > s.fibers)
      RFAIL(R, "session %zu (cancelled) holds %d ids with %d fibers", sid, s.held, s.fibers);
    if (s.end == E_DONE) {
      static const char* const names[] = {"received", "forwarded", "eaten", "dropped"};
      for (int k = 0; k < 4; ++k)
        if (s.ret[k] != s.rec[k])
          RFAIL(R, "session %zu returned %s=%" PRIu64 ", its receipts say %" PRIu64, sid,
                names[k], s.ret[k], s.rec[k]);
    }
  }
  if (held > fibers)
    RFAIL(R, "%" PRIu64 " held ids, but only %" PRIu64 " fibers in cancelled sessions", held,
          fibers);
  if (sent != R->sent) RFAIL(R, "the producers counted %" PRIu64 " sent, the ids %" PRIu64, R->sent, sent);
  if (issued != sent + R->full + R->timedout + R->closed)
    RFAIL(R, "%" PRIu64 " ids issued, %" PRIu64 " sent + %" PRIu64 " refused", issued, sent,
          R->full + R->timedout + R->closed);
  if (sent != ended + held + lost + doubled)
    RFAIL(R, "sent %" PRIu64 " != ended %" PRIu64 " + held %" PRIu64 " + lost %" PRIu64
             " + doubled %" PRIu64, sent, ended, held, lost, doubled);
  ss.issued += issued;
  ss.sent += sent;
  ss.full += R->full;
  ss.timedout += R->timedout;
  ss.closed += R->closed;
  ss.held += held;
  ss.lost += lost;
  ss.doubled += doubled;
}

// --- a round ------------------------------------------------------------------------

lua_State* host_state(Round* R) {
  lua_State* L = luaL_newstate();
  if (!L) {
    RFAIL(R, "luaL_newstate failed");
    return nullptr;
  }
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  std::string cpath = opt.module_dir + "/?.so";
  std::string path = std::string(DSS_STRESS_LUA_DIR) + "/?.lua";
  lua_pushstring(L, cpath.c_str());
  lua_setfield(L, -2, "cpath");
  lua_pushstring(L, path.c_str());
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_dostring(L, "return require 'darksidesync'") != 0) {
    RFAIL(R, "require: %s", lua_tostring(L, -1));
    lua_close(L);
    return nullptr;
  }
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v2_KEY);
    R->api = static_cast<const DSS_api_2v2_t*>(lua_touserdata(L, -1));
  }
  lua_settop(L, 0);
  if (!R->api || std::strcmp(R->api->version, DSS_API_2v2_KEY) != 0) {
    RFAIL(R, "no %s in the registry", DSS_API_2v2_KEY);
    lua_close(L);
    return nullptr;
  }
  return L;
}

std::atomic<std::uint64_t> g_next_base{1};

void run_round(int host, std::uint64_t seed) {
  Round R;
  R.seed = seed;
  R.host = host;
  R.base = g_next_base.fetch_add(ROUND_IDS);
  R.put_ch.reset(new std::atomic<std::int16_t>[ROUND_IDS]());
  R.ids.resize(ROUND_IDS);
  t_round = &R;
  ss.rounds++;
  lua_State* L = host_state(&R);
  if (L) {
    bool script_ok = false;
    double traffic = opt.session_traffic > 0 ? opt.session_traffic
                                             : 0.1 + double(seed % 500) / 1000.0;
    if (luaL_loadstring(L, SESS_HOST) != 0) {
      RFAIL(&R, "host script: %s", lua_tostring(L, -1));
    } else {
      push_host_helpers(L);
      lua_pushnumber(L, lua_Number(seed % 1000000000u));
      lua_pushstring(L, SESS_BODY);
      lua_pushnumber(L, traffic);
      lua_pushnumber(L, opt.hang_seconds / 3);
      if (lua_pcall(L, 5, 0, 0) != 0) RFAIL(&R, "host script: %s", lua_tostring(L, -1));
      else script_ok = true;
    }
    // Whatever happened, nothing may be left waiting on the state.
    join_producers(&R);
    lua_close(L);
    if (script_ok) account_round(&R);
  }
  t_round = nullptr;
  if (R.broken)
    std::fprintf(stderr, "stress: sessions: round seed %" PRIu64
                 " failed (reproduce: --states 0 --producers 0 --session-round-seed %" PRIu64
                 ")\n", seed, seed);
}

}  // namespace

void session_host_thread(int h) {
  t_rng.seed(opt.seed * 2654435761u + 99u + std::uint64_t(h));
  while (!g_stop.load()) {
    wait_window();
    if (g_stop.load()) break;
    std::uint64_t seed = opt.session_round_seed ? opt.session_round_seed
                                                : t_rng() % 1000000000u + 1;
    g_round_ns[std::size_t(h)] = now_ns();
    run_round(h, seed);
    g_round_ns[std::size_t(h)] = 0;
    if (opt.session_round_seed) g_stop = true;  // that round only
  }
  g_hosts_exited.fetch_add(1);
}

void sessions_summary() {
  if (opt.session_hosts == 0) return;
  std::printf(
      "stress: sessions: rounds=%" PRIu64 " spawned=%" PRIu64 " done=%" PRIu64
      " cancelled=%" PRIu64 " cancel_requests=%" PRIu64 " cancelled_but_done=%" PRIu64
      " errors=%" PRIu64 " hung=%" PRIu64 " ids=%" PRIu64 " sent=%" PRIu64
      " refused_full=%" PRIu64 " refused_timeout=%" PRIu64 " refused_closed=%" PRIu64
      " c_blocking=%" PRIu64 " c_timed=%" PRIu64 " c_nowait=%" PRIu64 " receipts=%" PRIu64
      " forwards=%" PRIu64 " eaten=%" PRIu64 " dropped_closed=%" PRIu64 " drained=%" PRIu64
      " held_by_cancelled=%" PRIu64 " channel_closes=%" PRIu64
      " put_timeouts=%" PRIu64 " get_timeouts=%" PRIu64 " lost=%" PRIu64 " doubled=%" PRIu64
      "\n",
      ss.rounds.load(), ss.spawned.load(), ss.done.load(), ss.cancelled.load(),
      ss.cancel_reqs.load(), ss.cancel_late.load(), ss.errors.load(), ss.hung.load(),
      ss.issued.load(), ss.sent.load(), ss.full.load(), ss.timedout.load(), ss.closed.load(),
      ss.blocking.load(), ss.timed.load(), ss.nowait.load(), ss.receipts.load(),
      ss.forwards.load(), ss.eaten.load(), ss.dropped.load(), ss.drained.load(),
      ss.held.load(), ss.chan_closes.load(), ss.put_timeouts.load(),
      ss.get_timeouts.load(), ss.lost.load(), ss.doubled.load());
}

std::uint64_t sessions_lost() { return ss.lost.load(); }
std::uint64_t sessions_doubled() { return ss.doubled.load(); }

}  // namespace stress
