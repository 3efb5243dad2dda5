/*
 * ticker.c -- the smallest useful DarkSideSync client library, and the one
 * `make demo` runs. Built only against include/ (it never links against
 * darksidesync).
 *
 *   local dss    = require "darksidesync"
 *   local ticker = require "ticker"
 *   ticker.start(count, interval_ms, on_tick, on_done)
 *
 * A background thread calls on_tick(n, thread_ms) `count` times, fire and
 * forget, then asks on_done(count) with a *blocking* delivery and waits for
 * its answer, which ticker.result() returns once the thread has finished
 * (ticker.join()). Lua drains the queue with darksidesync.poll().
 */
#include <lua.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The client helper, compiled into this file (it also works compiled as a
 * file of its own, as tests/clients/testclient does). */
#include "darksidesync_aux.c"

typedef struct {
  int n;        /* tick number, or the count for the final question */
  double ms;    /* milliseconds since start, on the producer's clock */
  int final;    /* 1: the blocking question */
  char answer[64];
} tick_t;

static pthread_t worker;
static int running = 0;
static int count, interval_ms;
static int tick_ref = LUA_NOREF, done_ref = LUA_NOREF;
static void *utilid;
static char result[64];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Decoder, on the Lua thread: push the callback and its arguments. With
 * L == NULL the item was cancelled: just free it. */
static int decode(lua_State *L, void *pData, void *uid) {
  tick_t *t = (tick_t *)pData;
  int n;
  (void)uid;
  if (L == NULL) {
    if (!t->final) free(t);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->final ? done_ref : tick_ref);
  lua_pushinteger(L, t->n);
  lua_pushnumber(L, t->ms);
  n = 3;
  if (!t->final) free(t); /* fire and forget: this is its end */
  return n;
}

/* Return callback for the final question: keep Lua's answer. */
static int ret(lua_State *L, void *pData, void *uid, int garbage) {
  tick_t *t = (tick_t *)pData;
  (void)uid;
  if (L == NULL || garbage) {
    strcpy(t->answer, L == NULL ? "(cancelled)" : "(not answered)");
    return 0;
  }
  strncpy(t->answer, luaL_optstring(L, 1, "(nothing)"), sizeof t->answer - 1);
  return 0;
}

static void *run(void *arg) {
  double t0 = now_ms();
  struct timespec pause;
  tick_t final;
  int i;
  (void)arg;
  pause.tv_sec = interval_ms / 1000;
  pause.tv_nsec = (interval_ms % 1000) * 1000000L;
  for (i = 1; i <= count; i++) {
    tick_t *t = calloc(1, sizeof *t);
    if (!t) break;
    t->n = i;
    t->ms = now_ms() - t0;
    if (DSS_deliver(utilid, decode, NULL, t) < DSS_SUCCESS) {
      free(t); /* not queued: still ours */
      return NULL;
    }
    nanosleep(&pause, NULL);
  }
  memset(&final, 0, sizeof final);
  final.n = count;
  final.final = 1;
  final.ms = now_ms() - t0;
  strcpy(final.answer, "(not delivered)");
  DSS_deliver(utilid, decode, ret, &final); /* blocks until Lua answered */
  strcpy(result, final.answer);
  return NULL;
}

static void cancel(void *uid) { DSS_shutdown(NULL, uid); }

static int l_start(lua_State *L) {
  if (running) return luaL_error(L, "ticker already running");
  count = (int)luaL_checkinteger(L, 1);
  interval_ms = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, tick_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, done_ref);
  lua_pushvalue(L, 3);
  tick_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 4);
  done_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  utilid = DSS_getutilid(L);
  if (pthread_create(&worker, NULL, run, NULL) != 0)
    return luaL_error(L, "cannot start the ticker thread");
  running = 1;
  return 0;
}

static int l_join(lua_State *L) {
  if (running) pthread_join(worker, NULL);
  running = 0;
  lua_pushstring(L, result);
  return 1;
}

int luaopen_ticker(lua_State *L) {
  static const luaL_Reg funcs[] = {{"start", l_start}, {"join", l_join},
                                   {NULL, NULL}};
  DSS_initialize(L, cancel);
  lua_newtable(L);
#if LUA_VERSION_NUM >= 502
  luaL_setfuncs(L, funcs, 0);
#else
  luaL_register(L, NULL, funcs);
#endif
  return 1;
}
