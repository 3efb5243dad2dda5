/* compat.h (C++ only) -- the one place where Lua 5.1 / LuaJIT, 5.2, 5.3 and 5.4 differ
 * for us. Everything else in src/lua/ is written against the 5.3/5.4 API
 * through these few names. */
#ifndef DSS_LUA_COMPAT_H
#define DSS_LUA_COMPAT_H

#ifdef __cplusplus
extern "C" {
#endif
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#ifdef __cplusplus
}
#endif

#if LUA_VERSION_NUM < 502 /* Lua 5.1 and LuaJIT */

#define LUA_OK 0

/* Registry entries keyed by a C address, as 5.2's rawgetp/rawsetp. Neither
 * allocates nor calls metamethods, so neither can raise. */
static inline void dss_rawgetp(lua_State *L, int idx, const void *p) {
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  lua_pushlightuserdata(L, const_cast<void *>(p));
  lua_rawget(L, idx);
}
static inline void dss_rawsetp(lua_State *L, int idx, const void *p) {
  idx = idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
  lua_pushlightuserdata(L, const_cast<void *>(p));
  lua_insert(L, -2);
  lua_rawset(L, idx);
}

static inline void dss_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

/* Calls f(L) with ud as its only argument, fully protected: in 5.1 even
 * making the C closure happens inside the protected call. Returns LUA_OK or
 * an error status (error object popped). */
static inline int dss_cpcall(lua_State *L, lua_CFunction f, void *ud) {
  int status = lua_cpcall(L, f, ud);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

/* 1.0 set the global 'darksidesync' on 5.1, as luaL_register did. */
#define DSS_SET_GLOBAL 1

#else /* Lua 5.2, 5.3, 5.4 */

#define dss_rawgetp(L, idx, p) ((void)lua_rawgetp((L), (idx), (p)))
#define dss_rawsetp(L, idx, p) lua_rawsetp((L), (idx), (p))
#define dss_setfuncs(L, l, nup) luaL_setfuncs((L), (l), (nup))

/* As 5.1's lua_cpcall: a light C function does not allocate, so pushing it
 * cannot raise. Returns LUA_OK or an error status (error object popped). */
static inline int dss_cpcall(lua_State *L, lua_CFunction f, void *ud) {
  int status;
  if (!lua_checkstack(L, 2)) return LUA_ERRMEM;
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ud);
  status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

#define DSS_SET_GLOBAL 0

#endif

#if LUA_VERSION_NUM < 503
/* An integer argument given as a number with no fraction, else 0. Never
 * converts an out-of-range float (that would be undefined behaviour). */
static inline int dss_tointegerx(lua_State *L, int idx, lua_Integer *out) {
  lua_Number n;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  n = lua_tonumber(L, idx);
  if (n != n || n < -9007199254740992.0 || n > 9007199254740992.0 ||
      static_cast<lua_Number>(static_cast<lua_Integer>(n)) != n)
    return 0;
  *out = static_cast<lua_Integer>(n);
  return 1;
}

#else
/* An integer argument given as an integer or an integral float, else 0. */
static inline int dss_tointegerx(lua_State *L, int idx, lua_Integer *out) {
  int ok = 0;
  lua_Integer v;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  v = lua_tointegerx(L, idx, &ok);
  if (ok) *out = v;
  return ok;
}
#endif

/* Whether argument idx is a number, after turning a numeric string into
 * one in place, as Lua's own argument checks accept "5000" for 5000. */
static inline int dss_numberarg(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) return 1;
  if (t != LUA_TSTRING || !lua_isnumber(L, idx)) return 0;
#if LUA_VERSION_NUM >= 503
  if (lua_stringtonumber(L, lua_tostring(L, idx)) == 0) return 0;
#else
  lua_pushnumber(L, lua_tonumber(L, idx));
#endif
  lua_replace(L, idx);
  return 1;
}

#endif /* DSS_LUA_COMPAT_H */
