/*
 * chanclient.c -- a test client of the 2v2 channel API: takes references
 * to Lua channels (through the aux helper's DSS_channel_retain, and the
 * raw channel_retain), and puts values into them from threads of its own.
 * Built like testclient: only include/, never linking darksidesync.
 *
 *   cc.retain(ch)                 -> ref (light userdata); raises when ch is
 *                                    not a channel handle (the aux helper)
 *   cc.retain_raw(idx, ...)       -> ref | nil, errcode: channel_retain(L, idx)
 *                                    on the arguments after idx
 *   cc.release(ref), cc.close(ref) -> close's code
 *   cc.put(ref|nil, flags, timeout_ms, types, ...)
 *                                 -> code, elapsed ms: one put on this thread;
 *                                    types: a letter per value, its argument
 *                                    taken from ...: z nil, b boolean,
 *                                    i integer, n number, s string; and
 *                                    bad ones: X (type 99), N (NULL, len 5),
 *                                    E (NULL, len 0)
 *   cc.putnull(ref, n)            -> channel_put(ref, NULL, n, 0, 0)
 *   cc.feed(ref, n, mode [, timeout_ms [, feeder]])
 *                                 -> id: a thread putting n messages (below);
 *                                    mode "block", "timeout" or "nowait"
 *   cc.join(id)                   -> {ok, full, timeout, closed, other,
 *                                    last, ms}: the codes, counted
 *   cc.outlive()                  -> ok, closed, late, released: a channel
 *                                    made in a state of its own, fed by a
 *                                    thread blocked on it while that state
 *                                    is closed; released: the close alone
 *                                    ended the put (within 30 s)
 *
 * Message i (1-based) of feeder f, with b = f * 1000000 + i:
 *   i % 4 == 0: b                                  (an integer)
 *   i % 4 == 1: "m\0<b>\0"                         (a string with zeros)
 *   i % 4 == 2: b, b + 0.5, i % 8 == 2             (three values)
 *   i % 4 == 3: nil, "s<b>", false
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_timedjoin_np */
#endif
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "darksidesync_aux.h"

#define MAX_FEEDERS 8

typedef struct feeder {
  pthread_t thread;
  int used;
  void *ch;
  int n, mode, f;
  long timeout;
  int ok, full, timeout_n, closed, other, last;
  double ms; /* the last put's duration */
} feeder;

static feeder g_feeders[MAX_FEEDERS];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void count(feeder *fd, int rc) {
  fd->last = rc;
  if (rc == DSS_SUCCESS) fd->ok++;
  else if (rc == DSS_ERR_QUEUE_FULL) fd->full++;
  else if (rc == DSS_ERR_TIMEOUT) fd->timeout_n++;
  else if (rc == DSS_ERR_CLOSED) fd->closed++;
  else fd->other++;
}

/* Message i of feeder f into ch; the put's code. */
static int put_message(void *ch, int f, int i, unsigned flags, long timeout) {
  long long b = (long long)f * 1000000 + i;
  char buf[48];
  DSS_value_t v[3];
  int n = 1;
  switch (i % 4) {
    case 0:
      v[0] = DSS_vinteger(b);
      break;
    case 1: {
      int len = snprintf(buf, sizeof buf, "m?%lld?", b);
      buf[1] = '\0';
      buf[len - 1] = '\0';
      v[0] = DSS_vlstring(buf, (size_t)len);
      break;
    }
    case 2:
      v[0] = DSS_vinteger(b);
      v[1] = DSS_vnumber((double)b + 0.5);
      v[2] = DSS_vboolean(i % 8 == 2);
      n = 3;
      break;
    default:
      snprintf(buf, sizeof buf, "s%lld", b);
      v[0] = DSS_vnil();
      v[1] = DSS_vstring(buf);
      v[2] = DSS_vboolean(0);
      n = 3;
      break;
  }
  return DSS_channel_put(ch, v, n, flags, timeout);
}

enum { MODE_BLOCK, MODE_TIMEOUT, MODE_NOWAIT };

static void *feed_thread(void *arg) {
  feeder *fd = (feeder *)arg;
  int i;
  for (i = 1; i <= fd->n; ++i) {
    double t0 = now_ms();
    int rc = put_message(fd->ch, fd->f, i,
                         fd->mode == MODE_NOWAIT ? DSS_DELIVER_NOWAIT : 0u,
                         fd->mode == MODE_TIMEOUT ? fd->timeout
                                                  : DSS_TIMEOUT_INFINITE);
    fd->ms = now_ms() - t0;
    count(fd, rc);
  }
  return NULL;
}

static void *checkref(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checktype(L, idx, LUA_TLIGHTUSERDATA);
  return lua_touserdata(L, idx);
}

static int l_retain(lua_State *L) {
  lua_pushlightuserdata(L, DSS_channel_retain(L, 1));
  return 1;
}

static int l_retain_raw(lua_State *L) {
  int idx = (int)luaL_checkinteger(L, 1);
  int err = 0;
  pDSS_api_2v2_t api = DSS_getapi2v2(L);
  void *ch;
  lua_remove(L, 1);
  ch = api->channel_retain(L, idx, &err);
  if (ch) lua_pushlightuserdata(L, ch);
  else lua_pushnil(L);
  lua_pushinteger(L, err);
  return 2;
}

static int l_release(lua_State *L) {
  DSS_channel_release(checkref(L, 1));
  return 0;
}

static int l_close(lua_State *L) {
  lua_pushinteger(L, DSS_channel_close(checkref(L, 1)));
  return 1;
}

static int l_put(lua_State *L) {
  void *ch = checkref(L, 1);
  unsigned flags = (unsigned)luaL_checkinteger(L, 2);
  long timeout = (long)luaL_checkinteger(L, 3);
  size_t nt, i;
  const char *types = luaL_checklstring(L, 4, &nt);
  DSS_value_t v[DSS_CHANNEL_MAX_VALUES + 2];
  double t0;
  int rc;
  if (nt > DSS_CHANNEL_MAX_VALUES + 2) return luaL_error(L, "too many values");
  for (i = 0; i < nt; ++i) {
    int a = 5 + (int)i;
    switch (types[i]) {
      case 'z': v[i] = DSS_vnil(); break;
      case 'b': v[i] = DSS_vboolean(lua_toboolean(L, a)); break;
#if LUA_VERSION_NUM >= 503
      case 'i': v[i] = DSS_vinteger((long long)luaL_checkinteger(L, a)); break;
#else
      case 'i': v[i] = DSS_vinteger((long long)luaL_checknumber(L, a)); break;
#endif
      case 'n': v[i] = DSS_vnumber((double)luaL_checknumber(L, a)); break;
      case 's': {
        size_t len;
        const char *s = luaL_checklstring(L, a, &len);
        v[i] = DSS_vlstring(s, len);
        break;
      }
      case 'X': v[i] = DSS_vnil(); v[i].type = 99; break;
      case 'N': v[i] = DSS_vlstring(NULL, 5); break;
      case 'E': v[i] = DSS_vlstring(NULL, 0); break;
      default: return luaL_error(L, "unknown type letter '%c'", types[i]);
    }
  }
  t0 = now_ms();
  rc = DSS_channel_put(ch, v, (int)nt, flags, timeout);
  lua_pushinteger(L, rc);
  lua_pushnumber(L, now_ms() - t0);
  return 2;
}

static int l_putnull(lua_State *L) {
  lua_pushinteger(L, DSS_channel_put(checkref(L, 1), NULL,
                                     (int)luaL_checkinteger(L, 2), 0, 0));
  return 1;
}

static int l_feed(lua_State *L) {
  static const char *const modes[] = {"block", "timeout", "nowait", NULL};
  void *ch = checkref(L, 1);
  int n = (int)luaL_checkinteger(L, 2);
  int mode = luaL_checkoption(L, 3, NULL, modes);
  long timeout = (long)luaL_optinteger(L, 4, DSS_TIMEOUT_INFINITE);
  int f = (int)luaL_optinteger(L, 5, 0), id;
  feeder *fd = NULL;
  for (id = 0; id < MAX_FEEDERS; ++id)
    if (!g_feeders[id].used) {
      fd = &g_feeders[id];
      break;
    }
  if (fd == NULL) return luaL_error(L, "chanclient: too many feeders");
  memset(fd, 0, sizeof *fd);
  fd->used = 1;
  fd->ch = ch;
  fd->n = n;
  fd->mode = mode;
  fd->timeout = timeout;
  fd->f = f;
  if (pthread_create(&fd->thread, NULL, feed_thread, fd) != 0) {
    fd->used = 0;
    return luaL_error(L, "chanclient: pthread_create failed");
  }
  lua_pushinteger(L, id);
  return 1;
}

static void push_counts(lua_State *L, const feeder *fd) {
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, fd->ok); lua_setfield(L, -2, "ok");
  lua_pushinteger(L, fd->full); lua_setfield(L, -2, "full");
  lua_pushinteger(L, fd->timeout_n); lua_setfield(L, -2, "timeout");
  lua_pushinteger(L, fd->closed); lua_setfield(L, -2, "closed");
  lua_pushinteger(L, fd->other); lua_setfield(L, -2, "other");
  lua_pushinteger(L, fd->last); lua_setfield(L, -2, "last");
  lua_pushnumber(L, fd->ms); lua_setfield(L, -2, "ms");
}

static int l_join(lua_State *L) {
  int id = (int)luaL_checkinteger(L, 1);
  feeder *fd;
  luaL_argcheck(L, id >= 0 && id < MAX_FEEDERS && g_feeders[id].used, 1, "no such feeder");
  fd = &g_feeders[id];
  pthread_join(fd->thread, NULL);
  fd->used = 0;
  push_counts(L, fd);
  return 1;
}

/* Waits (bounded, 20 s) until L2's channel on top holds n. */
static int wait_len(lua_State *L2, int n) {
  int i;
  for (i = 0; i < 20000; ++i) {
    lua_getfield(L2, -1, "len");
    lua_pushvalue(L2, -2);
    lua_call(L2, 1, 1);
    if (lua_tointeger(L2, -1) == n) {
      lua_pop(L2, 1);
      return 1;
    }
    lua_pop(L2, 1);
    {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  return 0;
}

static int l_outlive(lua_State *L) {
  lua_State *L2 = luaL_newstate();
  feeder fd;
  void *ch;
  int late, waited, released;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (L2 == NULL) return luaL_error(L, "chanclient: no memory");
  luaL_openlibs(L2);
  if (luaL_dostring(L2, "return require('darksidesync.channel').new(1)") != 0) {
    lua_pushstring(L, lua_tostring(L2, -1));
    lua_close(L2);
    return lua_error(L);
  }
  ch = DSS_channel_retain(L2, -1);
  memset(&fd, 0, sizeof fd);
  fd.ch = ch;
  fd.n = 3;
  fd.mode = MODE_BLOCK;
  fd.f = 7;
  if (pthread_create(&fd.thread, NULL, feed_thread, &fd) != 0) {
    lua_close(L2);
    DSS_channel_release(ch);
    return luaL_error(L, "chanclient: pthread_create failed");
  }
  waited = wait_len(L2, 2); /* one buffered, one put waiting */
  lua_close(L2); /* the last handle goes: the channel closes, the put ends */
  ts.tv_sec += 30;
  released = pthread_timedjoin_np(fd.thread, NULL, &ts) == 0;
  if (!released) { /* not released by lua_close: a close from C does */
    DSS_channel_close(ch);
    pthread_join(fd.thread, NULL);
  }
  late = put_message(ch, 7, 4, 0, DSS_TIMEOUT_INFINITE);
  DSS_channel_release(ch);
  lua_pushinteger(L, waited ? fd.ok : -1);
  lua_pushinteger(L, fd.closed);
  lua_pushinteger(L, late);
  lua_pushboolean(L, released);
  return 4;
}

static int l_strerror(lua_State *L) {
  lua_pushstring(L, DSS_strerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg funcs[] = {
    {"retain", l_retain}, {"retain_raw", l_retain_raw}, {"release", l_release},
    {"close", l_close},   {"put", l_put},               {"putnull", l_putnull},
    {"feed", l_feed},     {"join", l_join},             {"outlive", l_outlive},
    {"strerror", l_strerror}, {NULL, NULL}};

int luaopen_chanclient(lua_State *L) {
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
