/*
 * tree_client.c -- the smallest client library, as a binding author builds
 * it against an installed rock: scripts/check-rockspec.sh compiles it with
 * the Cflags of darksidesync.pc (or the luarocks show --rock-dir route) and
 * Lua's, plus the installed darksidesync_aux.c; no -llua, no darksidesync.
 * start(cb) delivers one fire-and-forget item from a pthread; join() returns
 * whether that deliver succeeded, and its code; Lua's poll() then yields cb
 * and the arguments "hello from a thread", 42.
 */
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdint.h>

#include "darksidesync_aux.h"

static void *utilid;
static int cbref = LUA_NOREF;
static pthread_t thread;

static int decode(lua_State *L, void *pData, void *uid) {  /* Lua thread */
  (void)uid;
  if (L == NULL) return 0;                        /* cancelled: nothing to free */
  lua_rawgeti(L, LUA_REGISTRYINDEX, cbref);       /* the callback */
  lua_pushstring(L, "hello from a thread");
  lua_pushinteger(L, (lua_Integer)(intptr_t)pData);
  return 3;                                       /* callback + 2 arguments */
}

static void *producer(void *arg) {                /* not a Lua thread */
  (void)arg;
  return (void *)(intptr_t)DSS_deliver(utilid, decode, NULL, (void *)(intptr_t)42);
}

static int start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  cbref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (pthread_create(&thread, NULL, producer, NULL) != 0) return luaL_error(L, "pthread_create");
  return 0;
}

static int join(lua_State *L) {
  void *rc;
  pthread_join(thread, &rc);
  lua_pushboolean(L, (intptr_t)rc == DSS_SUCCESS);
  lua_pushinteger(L, (lua_Integer)(intptr_t)rc);
  return 2;
}

static void cancel(void *uid) { DSS_shutdown(NULL, uid); }

int luaopen_tree_client(lua_State *L) {
  DSS_initialize(L, cancel);                      /* raises without darksidesync */
  utilid = DSS_getutilid(L);
  lua_newtable(L);
  lua_pushcfunction(L, start);
  lua_setfield(L, -2, "start");
  lua_pushcfunction(L, join);
  lua_setfield(L, -2, "join");
  return 1;
}
