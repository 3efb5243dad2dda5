// lua_host.cpp -- the embedded Lua states of the stress harness: opening one
// as a client library's host would (require "darksidesync" through
// package.cpath, the driver loaded), the helpers the driver calls (table H),
// and calls into darksidesync and the driver from C (see stress.cpp).
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

#include "runner.h"

namespace stress {

const char* const CB_KEY = "stress.cb";
const char* const STEP_KEY = "stress.step";
const char* const MODE_KEY = "stress.setmode";
const char* const REPORT_KEY = "stress.report";
const char* const DSS_KEY = "stress.dss";
const char* const ARM_KEY = "stress.arm";
const char* const UNBOUND_KEY = "stress.unbound";

thread_local StateRec* t_sr = nullptr;
thread_local Slot* t_slot = nullptr;
thread_local int t_udp = -1;

bool lua_do(lua_State* L, int nargs, int nres, const char* what) {
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    fail("%s: %s", what, lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  return true;
}

// --- helpers the driver calls (table H) ------------------------------------------

namespace {

// poll(2) on fd for ms, again after EINTR.
int poll_in(pollfd* p, int ms) {
  int r;
  do {
    r = ::poll(p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

extern "C" {

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
  int r = poll_in(&p, ms);
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
  poll_in(&p, ms);
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

namespace {

void push_helpers(lua_State* L) {
  lua_newtable(L);
  const luaL_Reg fns[] = {{"decoded", h_decoded}, {"decraised", h_decraised},
                          {"now", h_now},         {"fail", h_fail},
                          {"fdready", h_fdready}, {"udp", h_udp}};
  for (const luaL_Reg& f : fns) {
    lua_pushcfunction(L, f.func);
    lua_setfield(L, -2, f.name);
  }
  push_finalizer_helpers(L);
  lua_pushnumber(L, lua_Number(opt.scale));
  lua_setfield(L, -2, "scale");
}

// --- opening a state ------------------------------------------------------------

// A new state with the standard libraries, package.cpath at the module and
// math.randomseed(lua_seed); nullptr (reported) on failure.
lua_State* new_state(std::uint64_t lua_seed) {
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
  return L;
}

// Runs the driver (it requires darksidesync) and keeps what it returns in
// the registry.
bool load_driver(lua_State* L) {
  if (luaL_loadstring(L, DRIVER) != 0) {
    fail("driver: %s", lua_tostring(L, -1));
    return false;
  }
  push_helpers(L);
  if (!lua_do(L, 1, 7, "require darksidesync / driver")) return false;
  // cb, step, setmode, report, dss, arm, unbound: the last on top
  const char* const keys[] = {UNBOUND_KEY, ARM_KEY,  DSS_KEY, REPORT_KEY,
                              MODE_KEY,    STEP_KEY, CB_KEY};
  for (const char* key : keys) lua_setfield(L, LUA_REGISTRYINDEX, key);
  return true;
}

}  // namespace

lua_State* open_state(std::uint64_t lua_seed) {
  lua_State* L = new_state(lua_seed);
  if (!L) return nullptr;
  if (!load_driver(L) || !find_api(L)) {
    lua_close(L);
    return nullptr;
  }
  return L;
}

// --- calls into darksidesync and the driver -------------------------------------

namespace {

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

}  // namespace

long long dcall_int(lua_State* L, const char* fn, std::initializer_list<lua_Number> args) {
  if (!dcall(L, fn, args, 1)) return -1;
  long long v = static_cast<long long>(lua_tonumber(L, -1));
  lua_pop(L, 1);
  return v;
}

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

int pick_mode() {
  static const int weights[] = {0, 0, 1, 1, 2, 3, 4, 4};  // poll, dispatch, wait, fd, UDP
  return weights[t_rng() % 8];
}

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

bool fd_readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  return r > 0 && (p.revents & POLLIN);
}

}  // namespace stress
