// runner-lua.cpp -- the Lua states of dss_bench: the bench_* functions the
// Lua side of the scenarios calls, the package paths at ours, and calling
// into Lua from C (runner.h).
#include <poll.h>
#include <sched.h>

#include "runner.h"

namespace bench {

std::atomic<bool> g_stop{false};
long g_polls = 0;

namespace {

int l_yield(lua_State*) {
  sched_yield();
  return 0;
}

int l_stopped(lua_State* L) {
  lua_pushboolean(L, g_stop.load(std::memory_order_acquire));
  return 1;
}

// bench_pollfd(fd [, timeout_ms]): poll(2) on one fd for POLLIN, as an event
// loop (luv's uv_poll, cqueues) would; true when readable. Counts its calls.
int l_pollfd(lua_State* L) {
  struct pollfd p{};
  p.fd = static_cast<int>(luaL_checkinteger(L, 1));
  p.events = POLLIN;
  int ms = static_cast<int>(luaL_optinteger(L, 2, -1));
  ++g_polls;
  int r = ::poll(&p, 1, ms);
  lua_pushboolean(L, r > 0 && (p.revents & POLLIN));
  return 1;
}

// bench_now(): the steady clock in nanoseconds (a Lua number).
int l_now(lua_State* L) {
  lua_pushnumber(L, now_ns());
  return 1;
}

// package[field] = dir .. "/?." .. ext .. ";" .. package[field]
void prepend_path(lua_State* L, const char* field, const std::string& dir, const char* ext) {
  lua_getfield(L, -1, field);
  std::string p = dir + "/?." + ext + ";" + lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_pushstring(L, p.c_str());
  lua_setfield(L, -2, field);
}

}  // namespace

lua_State* new_state() {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushcfunction(L, l_now);
  lua_setglobal(L, "bench_now");
  lua_pushcfunction(L, l_yield);
  lua_setglobal(L, "bench_yield");
  lua_pushcfunction(L, l_stopped);
  lua_setglobal(L, "bench_stopped");
  lua_pushcfunction(L, l_pollfd);
  lua_setglobal(L, "bench_pollfd");
  // Ours first, then the default paths (LuaSocket for the dss helper).
  lua_getglobal(L, "package");
  prepend_path(L, "cpath", opt.module_dir, "so");
  prepend_path(L, "path", opt.lua_dir, "lua");
  lua_pop(L, 1);
  return L;
}

void run(lua_State* L, const char* code) {
  if (luaL_loadstring(L, code) || lua_pcall(L, 0, 0, 0)) {
    std::fprintf(stderr, "bench: Lua error: %s\n", lua_tostring(L, -1));
    std::exit(2);
  }
}

double call(lua_State* L, const char* name, std::initializer_list<double> args) {
  lua_getglobal(L, name);
  for (double a : args) lua_pushnumber(L, a);
  if (lua_pcall(L, int(args.size()), 1, 0)) {
    std::fprintf(stderr, "bench: Lua error in %s: %s\n", name, lua_tostring(L, -1));
    std::exit(2);
  }
  double r = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return r;
}

int ref_global(lua_State* L, const char* name) {
  lua_getglobal(L, name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

double global_number(lua_State* L, const char* name) {
  lua_getglobal(L, name);
  double r = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return r;
}

const char* const COMMON_LUA = R"(
  unpack = unpack or table.unpack
  n = 0
  function cb(x) n = n + 1 end
  function cbt(t) cb(unpack(t)) end
  function count() return n end
)";

}  // namespace bench
