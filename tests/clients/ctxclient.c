/*
 * ctxclient.c -- a test client of the client-context API (2v1): registers
 * through the aux helper's DSS_initializec with a context and a name,
 * delivers with DSS_deliverc from a thread, and checks that every callback
 * (decoder, return, cancel) gets its context back. Built like testclient:
 * only include/, never linking darksidesync.
 *
 *   ctx.init([name])           register (context = this library's state)
 *   ctx.setcallback(f)         the Lua function each decoded item calls
 *   ctx.start(n [, opts])      a thread delivering n items; opts.blocking,
 *                              opts.raise (the decoder raises), opts.timeout
 *   ctx.join()                 -> counters table (joins the thread)
 *   ctx.deliver1v0()           DSS_deliver2 with 1v0 callbacks: the code
 *   ctx.queued()               DSS_queued of this library
 *   ctx.utilid()               the utilid (light userdata), or nil
 *   ctx.unreg()                DSS_shutdown(L)
 */
#include <pthread.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "darksidesync_aux.h"

typedef struct state {
  pthread_mutex_t mu;
  int decoded, returned, cancelled_items, cancels, badctx, last_rc, answers;
} state;

static state g = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, 0, 0};
static void *g_utilid = NULL;
static pthread_t g_thread;
static int g_running = 0;
static int g_n = 0, g_blocking = 0, g_raise = 0;
static long g_timeout = DSS_TIMEOUT_INFINITE;
static char g_cbkey;

#define COUNT(field) \
  do { pthread_mutex_lock(&g.mu); g.field++; pthread_mutex_unlock(&g.mu); } while (0)

static void check_ctx(void *context) {
  if (context != &g) COUNT(badctx);
}

static int decode(lua_State *L, void *pData, void *utilid, void *context) {
  (void)utilid;
  check_ctx(context);
  if (L == NULL) { /* cancelled */
    COUNT(cancelled_items);
    return 0;
  }
  COUNT(decoded);
  if (g_raise) return luaL_error(L, "ctxclient: decoder failed");
  lua_pushlightuserdata(L, &g_cbkey);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushinteger(L, (lua_Integer)(size_t)pData);
  return 2;
}

static int ret(lua_State *L, void *pData, void *utilid, int garbage, void *context) {
  (void)pData, (void)utilid;
  check_ctx(context);
  if (L == NULL) {
    COUNT(cancelled_items);
    return 0;
  }
  COUNT(returned);
  if (!garbage && lua_gettop(L) >= 1 && lua_tointeger(L, 1) == 42) COUNT(answers);
  return 0;
}

static void cancel(void *utilid, void *context) {
  check_ctx(context);
  COUNT(cancels);
  DSS_shutdown(NULL, utilid);
}

static void *producer(void *arg) {
  int i;
  (void)arg;
  for (i = 1; i <= g_n; ++i) {
    int rc = DSS_deliverc(g_utilid, decode, g_blocking ? ret : NULL,
                          (void *)(size_t)i, 0, g_timeout);
    pthread_mutex_lock(&g.mu);
    g.last_rc = rc;
    pthread_mutex_unlock(&g.mu);
  }
  return NULL;
}

static int l_init(lua_State *L) {
  DSS_initializec(L, cancel, &g, luaL_optstring(L, 1, NULL));
  g_utilid = DSS_getutilid(L);
  return 0;
}

static int l_setcallback(lua_State *L) {
  lua_pushlightuserdata(L, &g_cbkey);
  lua_pushvalue(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_start(lua_State *L) {
  g_n = (int)luaL_checkinteger(L, 1);
  g_blocking = g_raise = 0;
  g_timeout = DSS_TIMEOUT_INFINITE;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "blocking");
    g_blocking = lua_toboolean(L, -1);
    lua_getfield(L, 2, "raise");
    g_raise = lua_toboolean(L, -1);
    lua_getfield(L, 2, "timeout");
    if (!lua_isnil(L, -1)) g_timeout = (long)lua_tointeger(L, -1);
    lua_pop(L, 3);
  }
  if (g_running) return luaL_error(L, "ctxclient: already started");
  if (pthread_create(&g_thread, NULL, producer, NULL) != 0)
    return luaL_error(L, "ctxclient: pthread_create failed");
  g_running = 1;
  return 0;
}

static int l_join(lua_State *L) {
  if (g_running) pthread_join(g_thread, NULL);
  g_running = 0;
  pthread_mutex_lock(&g.mu);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, g.decoded); lua_setfield(L, -2, "decoded");
  lua_pushinteger(L, g.returned); lua_setfield(L, -2, "returned");
  lua_pushinteger(L, g.answers); lua_setfield(L, -2, "answers");
  lua_pushinteger(L, g.cancelled_items); lua_setfield(L, -2, "cancelled_items");
  lua_pushinteger(L, g.cancels); lua_setfield(L, -2, "cancels");
  lua_pushinteger(L, g.badctx); lua_setfield(L, -2, "badctx");
  lua_pushinteger(L, g.last_rc); lua_setfield(L, -2, "last_rc");
  g.decoded = g.returned = g.answers = g.cancelled_items = g.cancels = 0;
  g.badctx = g.last_rc = 0;
  pthread_mutex_unlock(&g.mu);
  return 1;
}

static int old_decode(lua_State *L, void *pData, void *utilid) {
  (void)L, (void)pData, (void)utilid;
  return 0;
}

static int l_deliver1v0(lua_State *L) {
  lua_pushinteger(L, DSS_deliver2(g_utilid, old_decode, NULL, NULL, 0, 0));
  return 1;
}

static int l_queued(lua_State *L) {
  lua_pushinteger(L, DSS_queued(g_utilid));
  return 1;
}

static int l_utilid(lua_State *L) {
  if (g_utilid) lua_pushlightuserdata(L, g_utilid);
  else lua_pushnil(L);
  return 1;
}

static int l_unreg(lua_State *L) {
  DSS_shutdown(L, NULL);
  g_utilid = NULL;
  return 0;
}

static const luaL_Reg funcs[] = {{"init", l_init},         {"setcallback", l_setcallback},
                                 {"start", l_start},       {"join", l_join},
                                 {"deliver1v0", l_deliver1v0}, {"queued", l_queued},
                                 {"utilid", l_utilid},     {"unreg", l_unreg},
                                 {NULL, NULL}};

int luaopen_ctxclient(lua_State *L) {
  lua_newtable(L);
  {
    const luaL_Reg *f;
    for (f = funcs; f->name; ++f) {
      lua_pushcfunction(L, f->func);
      lua_setfield(L, -2, f->name);
    }
  }
  return 1;
}
