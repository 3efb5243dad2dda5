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


/* ---- For the copy routine (copy_out.cpp, copy_in.cpp). ---- */

/* An absolute stack index (5.1 has no lua_absindex); pseudo-indexes stay. */
static inline int dss_absindex(lua_State *L, int idx) {
  return idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
}

#if LUA_VERSION_NUM >= 503
/* Whether the number at idx is an integer subtype (never, before 5.3). */
#define dss_isinteger(L, idx) lua_isinteger((L), (idx))
#else
#define dss_isinteger(L, idx) ((void)(L), (void)(idx), 0)
#endif

#if LUA_VERSION_NUM >= 502
#define dss_rawlen(L, idx) lua_rawlen((L), (idx))
/* Whether a function's upvalue so named is its global environment (5.2+
 * compiles every global access through an upvalue named _ENV; 5.1 has
 * none, so there an upvalue named _ENV is an ordinary local). */
static inline int dss_is_env_upvalue(const char *name) {
  return name[0] == '_' && name[1] == 'E' && name[2] == 'N' && name[3] == 'V' && !name[4];
}
/* Loads a binary chunk only: text in a message would be a bug. */
#define dss_loadbinary(L, buf, sz, name) luaL_loadbufferx((L), (buf), (sz), (name), "b")
#else
#define dss_rawlen(L, idx) lua_objlen((L), (idx))
static inline int dss_is_env_upvalue(const char *name) {
  (void)name;
  return 0;
}
#define dss_loadbinary(L, buf, sz, name) luaL_loadbuffer((L), (buf), (sz), (name))
#endif

#if LUA_VERSION_NUM >= 503
/* Dumps with debug information (line numbers in the target's errors). */
#define dss_dump(L, w, d) lua_dump((L), (w), (d), 0)
#else
#define dss_dump(L, w, d) lua_dump((L), (w), (d))
#endif

/* Whether the garbage collector runs. Lua 5.1 cannot tell: taken as
 * running (LuaJIT 2.1 can). */
static inline int dss_gc_isrunning(lua_State *L) {
#ifdef LUA_GCISRUNNING
  return lua_gc(L, LUA_GCISRUNNING, 0);
#else
  (void)L;
  return 1;
#endif
}

/* dss_pcallv's call: argument 1 is a light userdata pointing at this,
 * replaced by ud before f runs. */
struct dss_pcallv_ctx {
  lua_CFunction f;
  void *ud;
  int room; /* stack slots the caller needs */
};
static inline int dss_pcallv_tramp(lua_State *L) {
  dss_pcallv_ctx *c = static_cast<dss_pcallv_ctx *>(lua_touserdata(L, 1));
  lua_pushlightuserdata(L, c->ud);
  lua_replace(L, 1);
  return c->f(L);
}

#if LUA_VERSION_NUM < 502
/* Lua 5.1 and LuaJIT: everything that may allocate happens here, inside
 * lua_cpcall: growing the stack (lua_checkstack raises when it cannot),
 * making the trampoline (lua_pushcfunction allocates; it is kept in the
 * registry), and LuaJIT's first push of a light userdata whose address
 * lies in a 4 GiB segment it has not seen (it records the segment: the
 * ctx's, on the C stack, comes in as this call's argument; the registry
 * key's here). After it, dss_pcallv pushes those unprotected, safely. */
static inline int dss_pcallv_prepare(lua_State *L) {
  dss_pcallv_ctx *c = static_cast<dss_pcallv_ctx *>(lua_touserdata(L, 1));
  const void *key = reinterpret_cast<const void *>(&dss_pcallv_tramp);
  if (!lua_checkstack(L, c->room)) return luaL_error(L, "stack overflow");
  dss_rawgetp(L, LUA_REGISTRYINDEX, key);
  if (lua_type(L, -1) == LUA_TFUNCTION) return 0;
  lua_pushcfunction(L, dss_pcallv_tramp);
  dss_rawsetp(L, LUA_REGISTRYINDEX, key);
  return 0;
}
static inline int dss_pcallv_push(lua_State *L, dss_pcallv_ctx *ctx) {
  int status = lua_cpcall(L, dss_pcallv_prepare, ctx);
  if (status != LUA_OK) return status; /* error object left on top */
  dss_rawgetp(L, LUA_REGISTRYINDEX, reinterpret_cast<const void *>(&dss_pcallv_tramp));
  lua_pushlightuserdata(L, ctx);
  return LUA_OK;
}
#else
/* Lua 5.2+: light C functions and light userdata never allocate, and
 * lua_checkstack grows the stack under its own protection (it returns 0
 * when it cannot): nothing here raises. */
static inline int dss_pcallv_push(lua_State *L, dss_pcallv_ctx *ctx) {
  if (!lua_checkstack(L, ctx->room)) {
    lua_pushliteral(L, "not enough memory"); /* interned at startup: no allocation */
    return LUA_ERRMEM;
  }
  lua_pushcfunction(L, dss_pcallv_tramp);
  lua_pushlightuserdata(L, ctx);
  return LUA_OK;
}
#endif

/* Calls f(ud, values first..first+n-1) fully protected, with nresults
 * results (LUA_MULTRET: all of them) on success. On error returns the
 * status and leaves the error object on top, unlike dss_cpcall. first must
 * be an absolute index. Needs 2 free stack slots on entry (a C function
 * has LUA_MINSTACK); grows the stack for the rest without raising. */
static inline int dss_pcallv(lua_State *L, lua_CFunction f, void *ud, int first, int n,
                             int nresults) {
  dss_pcallv_ctx ctx = {f, ud, n + 2};
  int status = dss_pcallv_push(L, &ctx), i;
  if (status != LUA_OK) return status;
  for (i = 0; i < n; i++) lua_pushvalue(L, first + i);
  return lua_pcall(L, n + 1, nresults, 0);
}

/* Resumes coroutine co (from: the state resuming it) with the nargs values
 * on its stack; *nres: the values it yielded or returned, on top of its
 * stack (its whole stack: start it with only the function and arguments).
 * Returns LUA_OK (returned), LUA_YIELD or an error status (message on top
 * of co). Before the next resume, pop the yielded values. */
static inline int dss_resume(lua_State *co, lua_State *from, int nargs, int *nres) {
#if LUA_VERSION_NUM >= 504
  return lua_resume(co, from, nargs, nres);
#elif LUA_VERSION_NUM >= 502
  int status = lua_resume(co, from, nargs);
  *nres = lua_gettop(co);
  return status;
#else
  (void)from;
  int status = lua_resume(co, nargs);
  *nres = lua_gettop(co);
  return status;
#endif
}

#endif /* DSS_LUA_COMPAT_H */
