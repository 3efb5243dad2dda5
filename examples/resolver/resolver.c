/*
 * resolver.c -- dss_resolver: asynchronous name resolution for Lua, a
 * DarkSideSync client library. Plain C99 with pthreads, built only against
 * include/ (it never links against darksidesync). See README.md here.
 *
 *   local dss      = require "darksidesync"
 *   local resolver = require "dss_resolver"
 *   resolver.resolve("localhost", function(name, addresses, err, attempts)
 *     ...
 *   end)
 *   -- drain with dss.poll()
 *
 * A small pool of worker threads runs getaddrinfo(); lookups beyond the pool
 * size wait in a FIFO. Each result is a fire-and-forget delivery. When a
 * lookup fails and a retry function is set, the worker asks Lua whether to
 * try again with a *blocking* delivery and waits for the answer.
 *
 * Ownership of a request (request_t):
 *   - queued in the FIFO: the context's; shutdown frees it;
 *   - taken by a worker: the worker's, also while it is blocked in a
 *     question to Lua (the question's pData is the request);
 *   - delivered as a result: darksidesync's until the result decoder runs,
 *     which frees it (with L, after pushing the callback; or with L == NULL
 *     on cancellation);
 *   - ended quietly (a question cancelled, a delivery refused): freed by the
 *     worker, nothing more reaches Lua.
 * The Lua functions of a request (callback, retry) live in a table of the
 * context's (fns[id] = {callback, retry}), touched on the Lua thread only.
 */
#define _POSIX_C_SOURCE 200809L

#include <lua.h>
#include <lauxlib.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "darksidesync_aux.h"

#define MAX_POOL 16         /* setpoolsize() accepts 1..MAX_POOL */
#define DEFAULT_POOL 2      /* workers per Lua state unless told otherwise */
#define MAX_ATTEMPTS 5      /* lookups per resolve() at most */
#define ADDR_LEN 128        /* a numeric IPv6 address with a scope fits */

#define CTX_MT "dss_resolver.context"
static const char ctx_key = 0; /* registry[&ctx_key] = this state's context */

#if LUA_VERSION_NUM < 502
#define LUA_OK 0
#endif

/* ---------------------------------------------------------------------
 * Types.
 * ------------------------------------------------------------------ */

enum answer { ANSWER_NONE, ANSWER_YES, ANSWER_NO, ANSWER_CANCELLED };
enum slotstate { SLOT_NONE, SLOT_ALIVE, SLOT_EXITED };

struct ctx;

typedef struct request {
  struct request *next; /* FIFO link */
  struct ctx *ctx;
  lua_Integer id;       /* key of its Lua functions in the fns table */
  int has_retry;        /* a retry function of its own was given */
  int attempts;         /* lookups made so far */
  int gai;              /* 0, or the EAI_* code of the last lookup */
  int sys_errno;        /* errno, for EAI_SYSTEM */
  int answer;           /* enum answer: Lua's reply to the last question */
  char **addrs;         /* numeric addresses, unique, in getaddrinfo order */
  int naddrs, capaddrs;
  char name[];          /* the name, NUL-terminated */
} request_t;

typedef struct slot {
  struct ctx *ctx;
  int index;
  int state; /* enum slotstate, under ctx->mu */
  pthread_t tid;
} slot_t;

/* One per Lua state that required the module. Allocated with malloc and
 * owned by a userdata (CTX_MT) whose __gc frees it. */
typedef struct ctx {
  struct ctx *next_ctx;  /* all contexts of the process, for cancel() */
  pthread_mutex_t mu;
  pthread_cond_t cv;     /* workers wait here for work */
  void *utilid;          /* our registration with the Lua state */
  int stopped;           /* shutdown() or cancel() ran: no more lookups */
  int poolsize;
  int has_default_retry; /* setretry() set a function (mirror for workers) */
  int pending;           /* requests alive: queued, running, waiting */
  request_t *head, *tail;
  slot_t slots[MAX_POOL];
  int fns_ref;           /* registry ref of the fns table (Lua thread) */
  lua_Integer next_id;   /* Lua thread */
} ctx_t;

/* Every live context of the process, so cancel(utilid) finds its own. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static ctx_t *g_ctxs = NULL;

/* ---------------------------------------------------------------------
 * Requests.
 * ------------------------------------------------------------------ */

static void clear_addrs(request_t *r) {
  int i;
  for (i = 0; i < r->naddrs; ++i) free(r->addrs[i]);
  free(r->addrs);
  r->addrs = NULL;
  r->naddrs = r->capaddrs = 0;
}

static void free_request(request_t *r) {
  clear_addrs(r);
  free(r);
}

/* Adds addr unless already there; 0 when out of memory. */
static int add_addr(request_t *r, const char *addr) {
  int i;
  char *copy;
  for (i = 0; i < r->naddrs; ++i)
    if (strcmp(r->addrs[i], addr) == 0) return 1;
  if (r->naddrs == r->capaddrs) {
    int cap = r->capaddrs ? 2 * r->capaddrs : 4;
    char **a = (char **)realloc(r->addrs, (size_t)cap * sizeof *a);
    if (!a) return 0;
    r->addrs = a;
    r->capaddrs = cap;
  }
  copy = (char *)malloc(strlen(addr) + 1);
  if (!copy) return 0;
  strcpy(copy, addr);
  r->addrs[r->naddrs++] = copy;
  return 1;
}

/* Whether name is "invalid" or under it (RFC 6761 reserves the TLD: it
 * never resolves). A trailing dot (absolute form) is allowed. */
static int under_invalid(const char *name) {
  size_t n = strlen(name);
  if (n > 0 && name[n - 1] == '.') n--;
  if (n < 7 || strncasecmp(name + n - 7, "invalid", 7) != 0) return 0;
  return n == 7 || name[n - 8] == '.';
}

/* One lookup: sets r->gai (0 on success) and r->addrs. */
static void lookup(request_t *r) {
  struct addrinfo hints, *res = NULL, *ai;
  int rc;
  clear_addrs(r);
  r->sys_errno = 0;
  if (under_invalid(r->name)) {
    r->gai = EAI_NONAME; /* deterministic, and no network traffic */
    return;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM; /* one entry per address, not per type */
  rc = getaddrinfo(r->name, NULL, &hints, &res);
  if (rc != 0) {
    r->gai = rc;
    if (rc == EAI_SYSTEM) r->sys_errno = errno;
    return;
  }
  r->gai = 0;
  for (ai = res; ai; ai = ai->ai_next) {
    char host[ADDR_LEN];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, NULL, 0,
                    NI_NUMERICHOST) != 0)
      continue;
    if (!add_addr(r, host)) {
      clear_addrs(r);
      r->gai = EAI_MEMORY;
      break;
    }
  }
  freeaddrinfo(res);
}

/* Ends a request that will not reach Lua any more. Any thread. */
static void end_quietly(ctx_t *c, request_t *r) {
  pthread_mutex_lock(&c->mu);
  c->pending--;
  pthread_mutex_unlock(&c->mu);
  free_request(r);
}

/* ---------------------------------------------------------------------
 * Lua side of requests (Lua thread only).
 * ------------------------------------------------------------------ */

/* Pushes fns[id][field] (nil when absent); with remove, fns[id] = nil. */
static void push_fn(lua_State *L, ctx_t *c, lua_Integer id, int field,
                    int remove) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref); /* fns */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_pushinteger(L, id);
  lua_rawget(L, -2); /* fns, entry */
  if (lua_istable(L, -1)) {
    lua_rawgeti(L, -1, field); /* fns, entry, value */
  } else {
    lua_pushnil(L);
  }
  if (remove) {
    lua_pushinteger(L, id);
    lua_pushnil(L);
    lua_rawset(L, -5);
  }
  lua_replace(L, -3); /* value, entry */
  lua_pop(L, 1);
}

static void push_err(lua_State *L, const request_t *r) {
  if (r->gai == EAI_SYSTEM && r->sys_errno != 0)
    lua_pushfstring(L, "%s: %s", gai_strerror(r->gai), strerror(r->sys_errno));
  else
    lua_pushstring(L, gai_strerror(r->gai));
}

/* Decoder of a result (fire and forget): callback(name, addresses, err,
 * attempts). This is the request's end either way. */
static int decode_result(lua_State *L, void *pData, void *uid) {
  request_t *r = (request_t *)pData;
  ctx_t *c = r->ctx;
  int i;
  (void)uid;
  if (L == NULL) { /* cancelled: shutdown, or the Lua state closing */
    end_quietly(c, r);
    return 0;
  }
  pthread_mutex_lock(&c->mu);
  c->pending--;
  pthread_mutex_unlock(&c->mu);
  push_fn(L, c, r->id, 1, 1);
  if (!lua_isfunction(L, -1)) { /* cannot happen: fns cleared by shutdown */
    free_request(r);
    return 0;
  }
  lua_pushstring(L, r->name);
  if (r->gai == 0) {
    lua_createtable(L, r->naddrs, 0);
    for (i = 0; i < r->naddrs; ++i) {
      lua_pushstring(L, r->addrs[i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    push_err(L, r);
  }
  lua_pushinteger(L, r->attempts);
  free_request(r);
  return 5;
}

/* The callback handed to Lua for a retry question, called by the poller as
 * cb(wt, name, err, attempt); upvalue 1 is the retry function. Calls
 * retry(name, err, attempt) and hands its truth value to wt. If retry
 * raises, wt gets false (the worker is released and does not retry) and the
 * error is raised again. Returns the answer. */
static int ask_retry(lua_State *L) {
  int answer, status;
  lua_settop(L, 4);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  status = lua_pcall(L, 3, 1, 0); /* wt, name, err, attempt, result */
  answer = status == LUA_OK && lua_toboolean(L, -1);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, answer);
  lua_call(L, 1, 0); /* wt(answer): releases the worker */
  if (status != LUA_OK) return lua_error(L); /* the error is on top */
  lua_pushboolean(L, answer);
  return 1;
}

/* Decoder of a retry question (blocking): pushes ask_retry over the retry
 * function, then name, err, attempt. No retry function any more (setretry
 * cleared it meanwhile): the answer is no, and the item ends here. */
static int decode_question(lua_State *L, void *pData, void *uid) {
  request_t *r = (request_t *)pData;
  ctx_t *c = r->ctx;
  (void)uid;
  if (L == NULL) {
    r->answer = ANSWER_CANCELLED;
    return 0;
  }
  push_fn(L, c, r->id, 2, 0);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref);
    if (lua_istable(L, -1)) lua_getfield(L, -1, "default");
    else lua_pushnil(L);
    lua_replace(L, -2);
  }
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    r->answer = ANSWER_NO;
    return 0;
  }
  lua_pushcclosure(L, ask_retry, 1);
  lua_pushstring(L, r->name);
  push_err(L, r);
  lua_pushinteger(L, r->attempts);
  return 4;
}

/* Return callback of a retry question: wt(answer). Collected uncalled: no.
 * Cancelled (L == NULL): the worker ends the request quietly. */
static int ret_question(lua_State *L, void *pData, void *uid, int garbage) {
  request_t *r = (request_t *)pData;
  (void)uid;
  if (L == NULL) r->answer = ANSWER_CANCELLED;
  else if (garbage) r->answer = ANSWER_NO;
  else r->answer = lua_toboolean(L, 1) ? ANSWER_YES : ANSWER_NO;
  return 0;
}

/* ---------------------------------------------------------------------
 * Workers.
 * ------------------------------------------------------------------ */

/* Runs one request to its end: lookups, questions, the result. */
static void process(ctx_t *c, request_t *r) {
  for (;;) {
    int stopped, ask, rc;
    r->attempts++;
    lookup(r);
    if (r->gai == 0 || r->attempts >= MAX_ATTEMPTS) break;
    pthread_mutex_lock(&c->mu);
    stopped = c->stopped;
    ask = r->has_retry || c->has_default_retry;
    pthread_mutex_unlock(&c->mu);
    if (stopped) {
      end_quietly(c, r);
      return;
    }
    if (!ask) break;
    r->answer = ANSWER_NONE;
    /* Blocks until Lua answered, the question was collected uncalled, or
     * it was cancelled. */
    rc = DSS_deliver(c->utilid, decode_question, ret_question, r);
    if (rc < DSS_SUCCESS || r->answer == ANSWER_CANCELLED) {
      end_quietly(c, r); /* shut down or closing: no more deliveries */
      return;
    }
    if (r->answer != ANSWER_YES) break;
  }
  if (DSS_deliver(c->utilid, decode_result, NULL, r) < DSS_SUCCESS)
    end_quietly(c, r); /* not queued: still ours */
}

static void *worker_main(void *arg) {
  slot_t *s = (slot_t *)arg;
  ctx_t *c = s->ctx;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    request_t *r;
    while (!c->stopped && s->index < c->poolsize && c->head == NULL)
      pthread_cond_wait(&c->cv, &c->mu);
    if (c->stopped || s->index >= c->poolsize) break; /* shut down, shrunk */
    r = c->head;
    c->head = r->next;
    if (!c->head) c->tail = NULL;
    r->next = NULL;
    pthread_mutex_unlock(&c->mu);
    process(c, r);
    pthread_mutex_lock(&c->mu);
  }
  s->state = SLOT_EXITED; /* joined by the next spawn into it, or by stop */
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Makes sure slots 0..poolsize-1 each have a live worker. Under c->mu.
 * Returns the number of live workers in that range. Workers run with the
 * asynchronous signals blocked: those are for the Lua thread. */
static int ensure_workers_locked(ctx_t *c) {
  sigset_t all, old;
  int i, alive = 0;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGABRT);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (i = 0; i < c->poolsize; ++i) {
    slot_t *s = &c->slots[i];
    if (s->state == SLOT_ALIVE) {
      alive++;
      continue;
    }
    if (s->state == SLOT_EXITED) {
      /* It marked itself exited under the lock we hold: it only returns. */
      pthread_join(s->tid, NULL);
      s->state = SLOT_NONE;
    }
    if (pthread_create(&s->tid, NULL, worker_main, s) == 0) {
      s->state = SLOT_ALIVE;
      alive++;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return alive;
}

/* Stops a context: no more lookups, queued ones dropped, our registration
 * removed (which cancels our items still queued or waiting in Lua and so
 * releases workers blocked in a question), workers joined. Afterwards no
 * request of this context exists. Idempotent. Touches no Lua: runs from
 * shutdown(), __gc and cancel (the state closing). */
static void ctx_stop(ctx_t *c) {
  request_t *q;
  pthread_t tids[MAX_POOL];
  int i, n = 0;
  pthread_mutex_lock(&c->mu);
  if (c->stopped) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  c->stopped = 1;
  q = c->head;
  c->head = c->tail = NULL;
  for (i = 0; i < MAX_POOL; ++i) {
    if (c->slots[i].state != SLOT_NONE) {
      tids[n++] = c->slots[i].tid;
      c->slots[i].state = SLOT_NONE;
    }
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  while (q) {
    request_t *next = q->next;
    end_quietly(c, q);
    q = next;
  }
  if (c->utilid) DSS_shutdown(NULL, c->utilid);
  for (i = 0; i < n; ++i) pthread_join(tids[i], NULL);
}

/* darksidesync calls this when the Lua state closes (our items are already
 * cancelled, new deliveries refused). */
static void cancel(void *uid) {
  ctx_t *c;
  pthread_mutex_lock(&g_mu);
  for (c = g_ctxs; c && c->utilid != uid; c = c->next_ctx) {
  }
  pthread_mutex_unlock(&g_mu);
  if (c) ctx_stop(c); /* unregisters too */
  else DSS_shutdown(NULL, uid);
}

/* ---------------------------------------------------------------------
 * Lua functions. Each has the context userdata as upvalue 1.
 * ------------------------------------------------------------------ */

/* The context; NULL only when the Lua state is closing and our __gc ran
 * (a finalizer of the program may still call us then). */
static ctx_t *self(lua_State *L) {
  return *(ctx_t **)lua_touserdata(L, lua_upvalueindex(1));
}

static int shut_down(lua_State *L) {
  return luaL_error(L, "dss_resolver: the resolver is shut down");
}

/* Drops the fns table: every callback and retry function of the context. */
static void drop_fns(lua_State *L, ctx_t *c) {
  luaL_unref(L, LUA_REGISTRYINDEX, c->fns_ref);
  c->fns_ref = LUA_NOREF;
}

static int typeerror(lua_State *L, int arg, const char *expected) {
  return luaL_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s",
                                               expected,
                                               luaL_typename(L, arg)));
}

/* resolve(name, callback[, retry]) */
static int l_resolve(lua_State *L) {
  ctx_t *c = self(L);
  size_t len;
  const char *name;
  request_t *r;
  lua_Integer id;
  if (lua_type(L, 1) != LUA_TSTRING) return typeerror(L, 1, "string");
  name = lua_tolstring(L, 1, &len);
  if (len == 0) return luaL_argerror(L, 1, "name is empty");
  if (strlen(name) != len) return luaL_argerror(L, 1, "name contains a zero byte");
  if (lua_type(L, 2) != LUA_TFUNCTION) return typeerror(L, 2, "function");
  if (!lua_isnoneornil(L, 3) && lua_type(L, 3) != LUA_TFUNCTION)
    return typeerror(L, 3, "function or nil");
  if (c == NULL || c->stopped) return shut_down(L);
  lua_settop(L, 3);

  /* fns[id] = {callback, retry}: Lua allocations first, they may raise. */
  id = ++c->next_id;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref);
  lua_pushinteger(L, id);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  if (lua_isfunction(L, 3)) {
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 2);
  }
  lua_rawset(L, -3); /* fns */

  r = (request_t *)calloc(1, sizeof *r + len + 1);
  if (!r) {
    lua_pushinteger(L, id);
    lua_pushnil(L);
    lua_rawset(L, -3);
    return luaL_error(L, "dss_resolver: out of memory");
  }
  memcpy(r->name, name, len + 1);
  r->ctx = c;
  r->id = id;
  r->has_retry = lua_isfunction(L, 3);

  pthread_mutex_lock(&c->mu);
  if (c->tail) c->tail->next = r;
  else c->head = r;
  c->tail = r;
  c->pending++;
  if (ensure_workers_locked(c) == 0) {
    /* No worker at all: take it back (it is the only one queued, as no
     * worker ran before either). */
    request_t **p = &c->head;
    while (*p != r) p = &(*p)->next;
    *p = r->next;
    c->tail = NULL;
    for (p = &c->head; *p; p = &(*p)->next) c->tail = *p;
    c->pending--;
    pthread_mutex_unlock(&c->mu);
    free(r);
    lua_pushinteger(L, id);
    lua_pushnil(L);
    lua_rawset(L, -3);
    return luaL_error(L, "dss_resolver: cannot start a worker thread");
  }
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* setpoolsize(n), n an integer 1..MAX_POOL */
static int l_setpoolsize(lua_State *L) {
  ctx_t *c = self(L);
  lua_Number n;
  if (lua_type(L, 1) != LUA_TNUMBER) return typeerror(L, 1, "number");
  n = lua_tonumber(L, 1);
  if (!(n >= 1 && n <= MAX_POOL) || n != (lua_Number)(int)n)
    return luaL_argerror(L, 1, "pool size must be an integer from 1 to 16");
  if (c == NULL) return shut_down(L);
  pthread_mutex_lock(&c->mu);
  c->poolsize = (int)n;
  if (!c->stopped) {
    if (c->head) ensure_workers_locked(c); /* grown: start them now */
    pthread_cond_broadcast(&c->cv);        /* shrunk: idle extras leave */
  }
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static int l_getpoolsize(lua_State *L) {
  ctx_t *c = self(L);
  int n;
  if (c == NULL) return shut_down(L);
  pthread_mutex_lock(&c->mu);
  n = c->poolsize;
  pthread_mutex_unlock(&c->mu);
  lua_pushinteger(L, n);
  return 1;
}

/* setretry(fn | nil): the retry function of lookups that have none. */
static int l_setretry(lua_State *L) {
  ctx_t *c = self(L);
  int set = lua_isfunction(L, 1);
  if (!set && !lua_isnoneornil(L, 1)) return typeerror(L, 1, "function or nil");
  if (c == NULL) return shut_down(L);
  lua_settop(L, 1);
  if (c->fns_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "default");
  }
  pthread_mutex_lock(&c->mu);
  c->has_default_retry = set;
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static int l_pending(lua_State *L) {
  ctx_t *c = self(L);
  int n;
  if (c == NULL) return shut_down(L);
  pthread_mutex_lock(&c->mu);
  n = c->pending;
  pthread_mutex_unlock(&c->mu);
  lua_pushinteger(L, n);
  return 1;
}

static int l_shutdown(lua_State *L) {
  ctx_t *c = self(L);
  if (c == NULL) return 0;
  ctx_stop(c);
  if (c->fns_ref != LUA_NOREF) drop_fns(L, c);
  return 0;
}

static int ctx_gc(lua_State *L) {
  ctx_t **pc = (ctx_t **)luaL_checkudata(L, 1, CTX_MT);
  ctx_t *c = *pc, **p;
  if (!c) return 0;
  *pc = NULL;
  ctx_stop(c);
  if (c->fns_ref != LUA_NOREF) drop_fns(L, c);
  pthread_mutex_lock(&g_mu);
  for (p = &g_ctxs; *p; p = &(*p)->next_ctx) {
    if (*p == c) {
      *p = c->next_ctx;
      break;
    }
  }
  pthread_mutex_unlock(&g_mu);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
  return 0;
}

/* Pushes this state's context userdata, creating it on first use. */
static void push_ctx(lua_State *L) {
  ctx_t **pc, *c;
  int i;
  lua_pushlightuserdata(L, (void *)&ctx_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  pc = (ctx_t **)lua_newuserdata(L, sizeof *pc);
  *pc = NULL;
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  c = (ctx_t *)calloc(1, sizeof *c);
  if (!c) {
    luaL_error(L, "dss_resolver: out of memory");
    return;
  }
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    free(c);
    luaL_error(L, "dss_resolver: cannot create a mutex");
    return;
  }
  if (pthread_cond_init(&c->cv, NULL) != 0) {
    pthread_mutex_destroy(&c->mu);
    free(c);
    luaL_error(L, "dss_resolver: cannot create a condition variable");
    return;
  }
  c->poolsize = DEFAULT_POOL;
  c->fns_ref = LUA_NOREF;
  for (i = 0; i < MAX_POOL; ++i) {
    c->slots[i].ctx = c;
    c->slots[i].index = i;
  }
  *pc = c; /* from here on __gc frees it */
  pthread_mutex_lock(&g_mu);
  c->next_ctx = g_ctxs;
  g_ctxs = c;
  pthread_mutex_unlock(&g_mu);
  lua_newtable(L);
  c->fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&ctx_key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

int luaopen_dss_resolver(lua_State *L) {
  static const luaL_Reg funcs[] = {{"resolve", l_resolve},
                                   {"setpoolsize", l_setpoolsize},
                                   {"getpoolsize", l_getpoolsize},
                                   {"setretry", l_setretry},
                                   {"pending", l_pending},
                                   {"shutdown", l_shutdown},
                                   {NULL, NULL}};
  const luaL_Reg *f;
  ctx_t *c;
  /* The context is made before we register: darksidesync's closer, renewed
   * by the registration, is then newer, so at lua_close darksidesync closes
   * first (calling cancel) and our __gc, later, only frees. */
  push_ctx(L);
  c = *(ctx_t **)lua_touserdata(L, -1);
  if (c->utilid == NULL) {
    void *uid;
    DSS_initialize(L, cancel); /* raises without darksidesync */
    uid = DSS_getutilid(L);
    pthread_mutex_lock(&g_mu); /* cancel() of another state reads it */
    c->utilid = uid;
    pthread_mutex_unlock(&g_mu);
  }
  lua_newtable(L);
  for (f = funcs; f->name; ++f) {
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  lua_pushinteger(L, MAX_ATTEMPTS);
  lua_setfield(L, -2, "maxattempts");
  return 1;
}
