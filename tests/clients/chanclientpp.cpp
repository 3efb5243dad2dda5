// chanclientpp.cpp -- a test client of the C++ helper's dss::channel_ref
// (darksidesync.hpp, API 2v2). Built from include/ only, never linking
// darksidesync.
//
//   pp.feed(ch, n)   a std::thread putting n messages (i, "v<i>", i + 0.25,
//                    i % 2 == 0) with put(), then one try_put() and one
//                    put_for(30) on what is by then a full channel;
//                    returns nothing
//   pp.join()        -> ok (puts that succeeded), try_put's code,
//                    put_for's code
//   pp.retain(v)     -> whether retain() gave a reference, its error code
#include "darksidesync.hpp"

#include <string>
#include <thread>

namespace {

std::thread g_thread;
int g_ok = 0, g_try = 0, g_for = 0;

int feed(lua_State* L) {
  dss::channel_ref ch = dss::channel_ref::retain(L, 1);
  if (!ch) return luaL_argerror(L, 1, "darksidesync.channel expected");
  int n = int(luaL_checkinteger(L, 2));
  if (g_thread.joinable()) return luaL_error(L, "chanclientpp: already feeding");
  g_ok = 0;
  g_thread = std::thread([ch = std::move(ch), n] {
    for (int i = 1; i <= n; ++i) {
      std::string s = "v" + std::to_string(i);
      if (ch.put(i, s, i + 0.25, i % 2 == 0) == DSS_SUCCESS) g_ok++;
    }
    g_try = ch.try_put(nullptr);
    g_for = ch.put_for(30, "late");
  });
  return 0;
}

int join(lua_State* L) {
  if (g_thread.joinable()) g_thread.join();
  lua_pushinteger(L, g_ok);
  lua_pushinteger(L, g_try);
  lua_pushinteger(L, g_for);
  return 3;
}

int retain(lua_State* L) {
  int err = 0;
  dss::channel_ref ch = dss::channel_ref::retain(L, 1, &err);
  lua_pushboolean(L, bool(ch));
  lua_pushinteger(L, err);
  return 2;
}

}  // namespace

extern "C" int luaopen_chanclientpp(lua_State* L) {
  lua_newtable(L);
  lua_pushcfunction(L, feed);
  lua_setfield(L, -2, "feed");
  lua_pushcfunction(L, join);
  lua_setfield(L, -2, "join");
  lua_pushcfunction(L, retain);
  lua_setfield(L, -2, "retain");
  return 1;
}
