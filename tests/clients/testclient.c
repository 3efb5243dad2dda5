/*
 * testclient.c -- a client library of darksidesync for the Lua tests.
 *
 * Built, as a real binding would be, only against include/ (the ABI header
 * and the helper); it never links against darksidesync. It runs producer
 * threads that deliver items, decodes and answers them with configurable
 * (mis)behaviour, and keeps exact counters of everything the 1v0 and 2v0
 * APIs made it do, readable from Lua.
 *
 * It acts as two client libraries: "lib 1" goes through the helper
 * (DSS_initialize, DSS_deliver, DSS_shutdown), "lib 2" through the API struct
 * directly, with a libid, decoder, return and cancel callback of its own.
 * Either delivers through the 2v0 struct's deliver2 when asked (api = 2);
 * the helper only knows 1v0, so the 2v0 struct is looked up here.
 *
 * Every Lua state that requires it gets a context, kept in a process-wide
 * table under an integer id and never freed, so that its counters can be
 * read from another state after that state was closed (testclient.newstate
 * creates such states). All counters are guarded by one mutex, never held
 * while calling into darksidesync (its callbacks re-enter us).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "darksidesync_aux.h"

#ifndef LUA_OK
#define LUA_OK 0
#endif

#define NLIBS 2
#define MAXCTX 4096
#define CALLBACK_KEY "testclient.callback"
#define STATE_MT "testclient.state"
#define DECODER_ERROR_MSG "testclient: decoder failed"
#define RETURN_ERROR_MSG "testclient: return callback failed"
/* How long join() waits for a context's producers, in total. */
#define JOIN_SECONDS 10 /* times DSS_TEST_TIMESCALE */
/* How long a callback in mode "hold" waits for the unreg thread. */
#define HOLD_MS 300 /* times DSS_TEST_TIMESCALE */
#define CANCEL_ERROR_MSG "testclient: cancel failed"

/* ---------------------------------------------------------------------
 * Counters.
 * ------------------------------------------------------------------ */

enum {
  C_ATTEMPTS,          /* deliver called */
  C_DELIVERED,         /* deliver returned SUCCESS or UDP_SEND_FAILED */
  C_UDP_FAILED,        /* ... of which UDP_SEND_FAILED */
  C_RELEASED,          /* blocking deliver returned after being queued */
  C_DECODED,           /* decoder called with L != NULL */
  C_DECODED_ZERO,      /* ... and returned 0 */
  C_DECODE_ERRORS,     /* ... and raised */
  C_RETURNED,          /* return callback, L != NULL, garbage == 0 */
  C_RETURN_ERRORS,     /* ... and raised */
  C_GARBAGE,           /* return callback, garbage == 1 */
  C_GARBAGE_ARGS,      /* ... called with Lua values on the stack */
  C_CANCELLED_QUEUED,  /* decoder called with L == NULL */
  C_CANCELLED_PENDING, /* return callback called with L == NULL */
  C_ANSWERS_OK,        /* blocking: the answer was the expected one */
  C_ANSWERS_BAD,       /* blocking: an answer, but a wrong one */
  C_UNANSWERED,        /* blocking: released without an answer */
  C_CANCEL_CALLS,      /* cancel callback calls */
  C_ENDED,             /* items that ended (see item_end) */
  C_BAD_ENDS,          /* a blocking item released not ended exactly once */
  C_MISROUTED,         /* callback of the wrong lib, or a wrong utilid */
  C_ORDER_BAD,         /* an item decoded before an older one of its producer */
  C_ALLOCATED,         /* fire-and-forget items allocated */
  C_FREED,             /* ... and freed */
  C_THREADS,           /* producer threads started */
  C_COMPLETED,         /* producers that delivered all their items (keepgoing:
                          that tried them all, whatever the results) */
  C_STOPPED,           /* producers that stopped on a deliver error */
  /* API 2v0. The five result codes below are counted here, not in errors. */
  C_TIMEOUT,           /* deliver returned DSS_ERR_TIMEOUT */
  C_QUEUE_FULL,        /* ... DSS_ERR_QUEUE_FULL */
  C_CANCELLED,         /* ... DSS_ERR_CANCELLED */
  C_WOULD_DEADLOCK,    /* ... DSS_ERR_WOULD_DEADLOCK */
  C_INVALID_ARGUMENT,  /* ... DSS_ERR_INVALID_ARGUMENT */
  C_TIMEDOUT_QUEUED,   /* decoder, L == NULL, on the delivering thread */
  C_TIMEDOUT_PENDING,  /* return callback, L == NULL, likewise */
  C_LATE,              /* a callback for a blocking item after its deliver
                          returned */
  C_REENTERED,         /* deliveries a decoder made (decoder "reenter...") */
  C_HELD,              /* callbacks (L != NULL) that held (decoder / ret
                          "hold") */
  C_AFTER_UNREG,       /* callbacks (L != NULL) of a lib that started, or were
                          still running, after an unreg of it made by the
                          unreg thread (unregonhold) had returned */
  C_CANCEL_RAISED,     /* cancel calls that raised a Lua error
                          (setcancelerror) */
  NCOUNTERS
};

static const char *const counter_names[NCOUNTERS] = {
    "attempts",          "delivered",       "udp_failed",
    "released",          "decoded",         "decoded_zero",
    "decode_errors",     "returned",        "return_errors",
    "garbage",           "garbage_args",    "cancelled_queued",
    "cancelled_pending", "answers_ok",      "answers_bad",
    "unanswered",        "cancel_calls",    "ended",
    "bad_ends",          "misrouted",       "order_bad",
    "allocated",         "freed",           "threads",
    "completed",         "stopped",         "timeout",
    "queue_full",        "cancelled",       "would_deadlock",
    "invalid_argument",  "timedout_queued", "timedout_pending",
    "late",              "reentered",       "held",
    "after_unreg",       "cancel_raised"};

/* Non-success deliver results from ERR_LOW to ERR_HIGH are counted per code;
 * anything else under errors_other. */
#define ERR_LOW (-130)
#define ERR_HIGH (-50)
#define NERRS (ERR_HIGH - ERR_LOW + 1)

/* ---------------------------------------------------------------------
 * Contexts, producers, items.
 * ------------------------------------------------------------------ */

/* Decoder behaviours (start's "decoder" option):
 *   normal     push the callback, lib, producer id, seq; return 4
 *   zero       push a value, return 0 (ends the item)
 *   negative   push a value, return -1 (ends the item, as 0)
 *   error      raise DECODER_ERROR_MSG
 *   junk       as normal, with two values pushed below the results
 *   bare       push the callback only; return 1
 *   overcount  push the callback only; return 5 (fire and forget only)
 *   unreg      unregister our own utilid, then as normal
 *   reenter    deliver a blocking item of our own (same lib, utilid, api,
 *              flags and timeout) from inside the decoder, then as normal
 *   reenter_ff as reenter, with a fire-and-forget item
 *   nested     call the Lua callback with "nested" (it may poll or
 *              dispatch), then as reenter
 *   hold       signal "held" (see unregonhold), then wait until the unreg
 *              thread's unreg returned, HOLD_MS at most; then as normal */
enum dmode {
  D_NORMAL,
  D_ZERO,
  D_NEGATIVE,
  D_ERROR,
  D_JUNK,
  D_BARE,
  D_OVERCOUNT,
  D_UNREG,
  D_REENTER,
  D_REENTER_FF,
  D_NESTED,
  D_HOLD
};
static const char *const dmode_names[] = {
    "normal",    "zero",  "negative", "error",      "junk", "bare",
    "overcount", "unreg", "reenter",  "reenter_ff", "nested",
    "hold",      NULL};
/* Return callback behaviours (start's "ret" option):
 *   normal  store the answer, push "ack", seq, number of Lua arguments
 *   none    store the answer, push nothing
 *   error   raise RETURN_ERROR_MSG
 *   hold    as the decoder "hold" (called from Lua only), then as normal */
enum rmode { R_NORMAL, R_NONE, R_ERROR, R_HOLD };
static const char *const rmode_names[] = {"normal", "none", "error", "hold",
                                          NULL};

struct producer;
struct item;

/* How an item is delivered and how its callbacks behave. */
typedef struct dopts {
  int api;            /* 1: the 1v0 deliver; 2: deliver2 of the 2v0 API */
  unsigned int flags; /* deliver2's flags */
  long timeout_ms;    /* deliver2's timeout */
  int blocking;       /* with a return callback */
  int dmode, rmode;
  long decode_ms; /* the decoder (L != NULL) sleeps this long first */
  long ret_ms;    /* the return callback (called from Lua) too */
  int stamp; /* the callback gets a 5th argument: when deliver was called */
} dopts;

typedef struct ctx {
  int id;
  void *utilid[NLIBS + 1]; /* last utilid of each lib (may be stale) */
  int nounreg;             /* cancel does not unregister */
  lua_State *L;            /* the state that required us (its main thread) */
  int cancel_raise[NLIBS + 1]; /* cancel raises a Lua error on L */
  /* Decoder / return mode "hold" and the unreg thread (unregonhold), under
   * g_mu, signalled through g_cv. */
  long held_total[NLIBS + 1];    /* callbacks that held, ever */
  int unreg_done[NLIBS + 1];     /* the unreg thread's unreg returned ... */
  void *unreg_utilid[NLIBS + 1]; /* ... for this utilid */
  struct unregger *unregger;     /* the last unreg thread (never freed) */
  long c[NLIBS + 1][NCOUNTERS];
  long errs[NLIBS + 1][NERRS];
  long errs_other[NLIBS + 1];
  int nproducers;
  struct producer *producers; /* newest first; never freed */
  long lua_seq;               /* seq of items delivered from Lua */
  struct item *kept;          /* blocking items; never freed (see item) */
  char **notes;
  int nnotes, capnotes;
} ctx;

typedef struct producer {
  struct producer *next;
  ctx *c;
  int pid;
  int lib;
  void *utilid;
  dopts o;
  int keepgoing; /* go on after a deliver that queued nothing */
  long delay_ms; /* sleep before each deliver */
  long items;
  long last_seq; /* seq of the last item of ours that was decoded */
  pthread_t th;
  int joined;
} producer;

/* One delivered item, malloc'd. A fire-and-forget item is freed when it
 * ends (or was not queued). A blocking item is kept on its context's list,
 * never freed, so that a callback darksidesync makes for it after its
 * deliver returned is counted ("late") instead of touching freed memory. */
typedef struct item {
  ctx *c;
  producer *p; /* NULL when delivered from Lua */
  int lib;
  void *utilid;
  int pid;
  long seq;
  int blocking;
  int dmode, rmode;
  dopts o;
  int ends;     /* times the item ended */
  int answered; /* the return callback stored an answer */
  long answer;
  /* Blocking items only: */
  int in_deliver;       /* its deliver has not returned yet */
  pthread_t deliverer;  /* the thread in that deliver */
  int ended_by_deliver; /* ended with L == NULL on that thread, inside it */
  int done;             /* its deliver returned */
  struct item *kept_next;
  double stamped; /* CLOCK_MONOTONIC seconds just before deliver (o.stamp) */
} item;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER; /* with g_mu */
static ctx *g_ctx[MAXCTX + 1]; /* by id, 1..g_nctx */
static int g_nctx;
static long g_cancel_unknown; /* cancel calls for a utilid we never had */
static char lib2_anchor;      /* libid of lib 2 */

#define LOCK() pthread_mutex_lock(&g_mu)
#define UNLOCK() pthread_mutex_unlock(&g_mu)

static void *libid_of(int lib) {
  return lib == 1 ? DSS_getlibid() : (void *)&lib2_anchor;
}

/* The counter of a 2v0 result code, or -1. */
static int named_counter(int rc) {
  switch (rc) {
    case DSS_ERR_TIMEOUT:
      return C_TIMEOUT;
    case DSS_ERR_QUEUE_FULL:
      return C_QUEUE_FULL;
    case DSS_ERR_CANCELLED:
      return C_CANCELLED;
    case DSS_ERR_WOULD_DEADLOCK:
      return C_WOULD_DEADLOCK;
    case DSS_ERR_INVALID_ARGUMENT:
      return C_INVALID_ARGUMENT;
    default:
      return -1;
  }
}

static void count_rc(ctx *c, int lib, int rc) { /* under g_mu */
  int named = named_counter(rc);
  if (named >= 0)
    c->c[lib][named]++;
  else if (rc >= ERR_LOW && rc <= ERR_HIGH)
    c->errs[lib][rc - ERR_LOW]++;
  else
    c->errs_other[lib]++;
}

static int delivered_ok(int rc) {
  return rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED;
}

/* Ends an item, under g_mu. */
static void item_end(item *it) {
  it->ends++;
  it->c->c[it->lib][C_ENDED]++;
}

/* Frees a fire-and-forget item. */
static void item_free(item *it) {
  ctx *c = it->c;
  int lib = it->lib;
  free(it);
  LOCK();
  c->c[lib][C_FREED]++;
  UNLOCK();
}

static void sleep_ms(long ms) {
  struct timespec ts;
  if (ms <= 0) return;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* The 2v0 API struct, found in the registry of the first state that loaded
 * us and offered it (the pointer is the same for the whole process). */
static pDSS_api_2v0_t g_api2;

static pDSS_api_2v0_t api2(void) {
  return __atomic_load_n(&g_api2, __ATOMIC_ACQUIRE);
}

/* Pushes registry[DSS_REGISTRY_NAME][DSS_API_2v0_KEY] (nil when absent). */
static void push_api2(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v0_KEY);
    lua_remove(L, -2);
  }
  if (!lua_islightuserdata(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

static void lookup_api2(lua_State *L) {
  push_api2(L);
  if (!lua_isnil(L, -1))
    __atomic_store_n(&g_api2, (pDSS_api_2v0_t)lua_touserdata(L, -1),
                     __ATOMIC_RELEASE);
  lua_pop(L, 1);
}

/* A new item (NULL when out of memory), counted: a fire-and-forget one as
 * allocated, a blocking one kept on c's list. */
static item *item_new(ctx *c, producer *p, int lib, void *utilid, int pid,
                      long seq, const dopts *o) {
  item *it = (item *)calloc(1, sizeof *it);
  if (!it) return NULL;
  it->c = c;
  it->p = p;
  it->lib = lib;
  it->utilid = utilid;
  it->pid = pid;
  it->seq = seq;
  it->o = *o;
  it->blocking = o->blocking;
  it->dmode = o->dmode;
  it->rmode = o->rmode;
  LOCK();
  c->c[lib][C_ATTEMPTS]++;
  if (it->blocking) {
    it->kept_next = c->kept;
    c->kept = it;
    it->in_deliver = 1;
    it->deliverer = pthread_self();
  } else {
    c->c[lib][C_ALLOCATED]++;
  }
  UNLOCK();
  return it;
}

/* DSS_TEST_TIMESCALE, an integer >= 1 (stretches every bound). */
static int timescale(void) {
  const char *scale = getenv("DSS_TEST_TIMESCALE");
  return scale && atoi(scale) > 0 ? atoi(scale) : 1;
}

/* CLOCK_REALTIME (g_cv's and pthread_timedjoin_np's clock) ms from now. */
static struct timespec deadline_ms(long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* Under g_mu, from a callback of lib `lib` called with L != NULL: counts it
 * as after_unreg (and returns 1) when the unreg thread's unreg of utilid has
 * returned already. */
static int after_unreg_locked(ctx *c, int lib, void *utilid) {
  if (!c->unreg_done[lib] || c->unreg_utilid[lib] != utilid) return 0;
  c->c[lib][C_AFTER_UNREG]++;
  return 1;
}

/* Mode "hold", from a callback of lib `lib` with L != NULL: signals that it
 * holds (the unreg thread waits for that), then waits until the unreg
 * thread's unreg returned, HOLD_MS at most. If unreg returned while we were
 * still here, counts after_unreg (unless `counted` already). */
static void hold(ctx *c, int lib, void *utilid, int counted) {
  struct timespec until = deadline_ms((long)HOLD_MS * timescale());
  LOCK();
  c->c[lib][C_HELD]++;
  c->held_total[lib]++;
  pthread_cond_broadcast(&g_cv);
  while (!c->unreg_done[lib]) {
    if (pthread_cond_timedwait(&g_cv, &g_mu, &until) == ETIMEDOUT) break;
  }
  if (!counted) after_unreg_locked(c, lib, utilid);
  UNLOCK();
}

/* ---------------------------------------------------------------------
 * The callbacks darksidesync calls.
 * ------------------------------------------------------------------ */

static int deliver_item(item *it, int nodecoder);

/* Whether a callback with L == NULL for it runs inside its own deliver, on
 * the delivering thread (deliver2 ending a timed-out item). Under g_mu. */
static int ended_by_deliver(item *it) {
  return it->blocking && it->in_deliver &&
         pthread_equal(it->deliverer, pthread_self());
}

/* From a decoder: delivers an item of our own (blocking or not) as `o`
 * says, and counts it as reentered. */
static void reenter(ctx *c, int lib, void *utilid, const dopts *outer,
                    int blocking) {
  dopts o = *outer;
  item *it;
  o.blocking = blocking;
  o.dmode = D_NORMAL;
  o.rmode = R_NORMAL;
  o.decode_ms = o.ret_ms = 0;
  LOCK();
  c->c[lib][C_REENTERED]++;
  UNLOCK();
  it = item_new(c, NULL, lib, utilid, 0, 0, &o);
  if (it) deliver_item(it, 0);
}

/* Decoder of lib `lib`: pushes the script's callback, then lib, producer id
 * and seq (or misbehaves as the item's dmode says, see enum dmode). */
static int decode(lua_State *L, void *pData, void *utilid, int lib) {
  item *it = (item *)pData;
  int blocking = it->blocking, dmode = it->dmode, pid = it->pid;
  int itlib = it->lib, counted = 0;
  long seq = it->seq;
  dopts o = it->o;
  double stamped = it->stamped;
  ctx *c = it->c;
  LOCK();
  if (it->lib != lib || it->utilid != utilid) it->c->c[lib][C_MISROUTED]++;
  if (blocking && it->done) it->c->c[it->lib][C_LATE]++;
  if (L == NULL) {
    if (ended_by_deliver(it)) {
      it->c->c[it->lib][C_TIMEDOUT_QUEUED]++;
      it->ended_by_deliver = 1;
    } else {
      it->c->c[it->lib][C_CANCELLED_QUEUED]++;
    }
    item_end(it);
    UNLOCK();
    if (!blocking) item_free(it);
    return 0;
  }
  it->c->c[it->lib][C_DECODED]++;
  counted = after_unreg_locked(it->c, it->lib, utilid);
  if (it->p) {
    if (seq <= it->p->last_seq) it->c->c[it->lib][C_ORDER_BAD]++;
    it->p->last_seq = seq;
  }
  if (dmode == D_ZERO || dmode == D_NEGATIVE)
    it->c->c[it->lib][C_DECODED_ZERO]++;
  if (dmode == D_ERROR) it->c->c[it->lib][C_DECODE_ERRORS]++;
  /* A fire-and-forget item ends here; a blocking one only when no return
   * callback can follow. */
  if (!blocking || dmode == D_ZERO || dmode == D_NEGATIVE || dmode == D_ERROR)
    item_end(it);
  UNLOCK();
  if (!blocking) item_free(it);
  it = NULL;
  /* Run long (with L set), to be running at a deliver2 deadline. */
  sleep_ms(o.decode_ms);
  if (dmode == D_HOLD) hold(c, itlib, utilid, counted);

  switch (dmode) {
    case D_ZERO:
      lua_pushliteral(L, "junk"); /* must be dropped */
      return 0;
    case D_NEGATIVE:
      lua_pushliteral(L, "junk");
      return -1;
    case D_BARE:
      lua_getfield(L, LUA_REGISTRYINDEX, CALLBACK_KEY);
      return 1;
    case D_ERROR:
      return luaL_error(L, DECODER_ERROR_MSG);
    case D_OVERCOUNT:
      lua_getfield(L, LUA_REGISTRYINDEX, CALLBACK_KEY);
      return 5;
    case D_UNREG:
      DSS_getapi()->unreg(utilid); /* our own registration, while decoding */
      break;
    case D_NESTED:
      lua_getfield(L, LUA_REGISTRYINDEX, CALLBACK_KEY);
      lua_pushliteral(L, "nested");
      lua_call(L, 1, 0);
      reenter(c, lib, utilid, &o, 1);
      break;
    case D_REENTER:
    case D_REENTER_FF:
      reenter(c, lib, utilid, &o, dmode == D_REENTER);
      break;
    case D_JUNK:
      lua_pushliteral(L, "junk1"); /* below the results: must be dropped */
      lua_pushliteral(L, "junk2");
      break;
    default:
      break;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, CALLBACK_KEY);
  lua_pushinteger(L, lib);
  lua_pushinteger(L, pid);
  lua_pushinteger(L, (lua_Integer)seq);
  if (o.stamp) {
    lua_pushnumber(L, (lua_Number)stamped);
    return 5;
  }
  return 4;
}

static int decode1(lua_State *L, void *pData, void *utilid) {
  return decode(L, pData, utilid, 1);
}
static int decode2(lua_State *L, void *pData, void *utilid) {
  return decode(L, pData, utilid, 2);
}

/* Return callback of lib `lib`: stores the first Lua argument as the answer
 * (the producer expects pid * 1000 + seq) and returns "ack", seq, number of
 * arguments. */
static int retfn(lua_State *L, void *pData, void *utilid, int garbage,
                 int lib) {
  item *it = (item *)pData;
  int nargs, counted = 0;
  if (L != NULL) {
    LOCK();
    counted = after_unreg_locked(it->c, it->lib, utilid);
    UNLOCK();
  }
  if (L != NULL && !garbage) {
    sleep_ms(it->o.ret_ms); /* run long */
    if (it->rmode == R_HOLD) hold(it->c, it->lib, utilid, counted);
  }
  LOCK();
  if (it->lib != lib || it->utilid != utilid) it->c->c[lib][C_MISROUTED]++;
  if (it->done) it->c->c[it->lib][C_LATE]++;
  item_end(it);
  if (L == NULL) {
    if (ended_by_deliver(it)) {
      it->c->c[it->lib][C_TIMEDOUT_PENDING]++;
      it->ended_by_deliver = 1;
    } else {
      it->c->c[it->lib][C_CANCELLED_PENDING]++;
    }
    UNLOCK();
    return 0;
  }
  if (garbage) {
    it->c->c[it->lib][C_GARBAGE]++;
    if (lua_gettop(L) != 0) it->c->c[it->lib][C_GARBAGE_ARGS]++;
    UNLOCK();
    return 0;
  }
  it->c->c[it->lib][C_RETURNED]++;
  if (it->rmode == R_ERROR) {
    it->c->c[it->lib][C_RETURN_ERRORS]++;
    UNLOCK();
    return luaL_error(L, RETURN_ERROR_MSG);
  }
  nargs = lua_gettop(L);
  if (nargs >= 1) {
    it->answered = 1;
    it->answer =
        lua_type(L, 1) == LUA_TNUMBER ? (long)lua_tonumber(L, 1) : LONG_MIN;
  }
  UNLOCK();
  if (it->rmode == R_NONE) return 0;
  lua_pushliteral(L, "ack");
  lua_pushinteger(L, (lua_Integer)it->seq);
  lua_pushinteger(L, nargs);
  return 3;
}

static int ret1(lua_State *L, void *pData, void *utilid, int garbage) {
  return retfn(L, pData, utilid, garbage, 1);
}
static int ret2(lua_State *L, void *pData, void *utilid, int garbage) {
  return retfn(L, pData, utilid, garbage, 2);
}

/* Cancel of lib `lib`: counts, and unregisters unless told not to. With
 * setcancelerror, raises CANCEL_ERROR_MSG on the Lua state that required us
 * instead (as a client that kept its lua_State and calls luaL_error on it),
 * before it unregisters anything. */
static void cancel(void *utilid, int lib) {
  int i, nounreg = 0;
  lua_State *raise_on = NULL;
  LOCK();
  for (i = 1; i <= g_nctx; ++i) {
    if (g_ctx[i]->utilid[lib] == utilid) break;
  }
  if (i <= g_nctx) {
    g_ctx[i]->c[lib][C_CANCEL_CALLS]++;
    nounreg = g_ctx[i]->nounreg;
    if (g_ctx[i]->cancel_raise[lib] && g_ctx[i]->L) {
      raise_on = g_ctx[i]->L;
      g_ctx[i]->c[lib][C_CANCEL_RAISED]++;
    }
  } else {
    g_cancel_unknown++;
  }
  UNLOCK();
  if (raise_on) luaL_error(raise_on, CANCEL_ERROR_MSG);
  if (nounreg) return;
  if (lib == 1)
    DSS_shutdown(NULL, utilid);
  else
    DSS_getapi()->unreg(utilid);
}

static void cancel1(void *utilid) { cancel(utilid, 1); }
static void cancel2(void *utilid) { cancel(utilid, 2); }

static DSS_decoder_1v0_t decoder_of(int lib) {
  return lib == 1 ? decode1 : decode2;
}
static DSS_return_1v0_t return_of(int lib) { return lib == 1 ? ret1 : ret2; }
static DSS_cancel_1v0_t cancel_of(int lib) {
  return lib == 1 ? cancel1 : cancel2;
}

/* Delivers as lib `lib` does with the 1v0 API (lib 1 through the helper,
 * lib 2 directly), or through deliver2 when o->api is 2. */
static int deliver_as(int lib, const dopts *o, void *utilid,
                      DSS_decoder_1v0_t dec, DSS_return_1v0_t ret,
                      void *pData) {
  pDSS_api_1v0_t api;
  if (o->api == 2) {
    pDSS_api_2v0_t a2 = api2();
    return a2 ? a2->deliver2(utilid, dec, ret, pData, o->flags, o->timeout_ms)
              : DSS_ERR_NOT_STARTED;
  }
  if (lib == 1) return DSS_deliver(utilid, dec, ret, pData);
  api = DSS_getapi();
  return api ? api->deliver(utilid, dec, ret, pData) : DSS_ERR_NOT_STARTED;
}

/* Delivers a new item (from item_new) from this thread and accounts for
 * the result; frees it when it is ours again. Returns the code. */
static double mono_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int deliver_item(item *it, int nodecoder) {
  ctx *c = it->c;
  int lib = it->lib, blocking = it->blocking, rc;
  if (it->o.stamp) it->stamped = mono_seconds();
  rc = deliver_as(lib, &it->o, it->utilid, nodecoder ? NULL : decoder_of(lib),
                  blocking ? return_of(lib) : NULL, it);
  /* A delivered fire-and-forget item may be gone already: don't touch. */
  LOCK();
  if (blocking) {
    it->in_deliver = 0;
    it->done = 1;
  }
  if (delivered_ok(rc)) {
    c->c[lib][C_DELIVERED]++;
    if (rc == DSS_ERR_UDP_SEND_FAILED) c->c[lib][C_UDP_FAILED]++;
    if (blocking) {
      c->c[lib][C_RELEASED]++;
      if (it->ends != 1) c->c[lib][C_BAD_ENDS]++;
      if (!it->answered)
        c->c[lib][C_UNANSWERED]++;
      else if (it->answer == it->pid * 1000L + it->seq)
        c->c[lib][C_ANSWERS_OK]++;
      else
        c->c[lib][C_ANSWERS_BAD]++;
    }
  } else {
    count_rc(c, lib, rc);
    /* Not queued, except for a blocking item that timed out after it was
     * queued (ended on this thread, inside deliver2) or was cancelled. */
    if (blocking && rc == DSS_ERR_TIMEOUT && it->ends == 1) {
      if (!it->ended_by_deliver) c->c[lib][C_BAD_ENDS]++;
    } else if (blocking && rc == DSS_ERR_CANCELLED) {
      if (it->ends != 1) c->c[lib][C_BAD_ENDS]++;
    } else if (it->ends != 0) {
      c->c[lib][C_BAD_ENDS]++;
    }
  }
  UNLOCK();
  if (!delivered_ok(rc) && !blocking) item_free(it);
  return rc;
}

/* ---------------------------------------------------------------------
 * Producer threads.
 * ------------------------------------------------------------------ */

static void *producer_main(void *arg) {
  producer *p = (producer *)arg;
  ctx *c = p->c;
  int lib = p->lib, rc = DSS_SUCCESS;
  long seq;
  for (seq = 1; seq <= p->items; ++seq) {
    item *it;
    sleep_ms(p->delay_ms);
    it = item_new(c, p, lib, p->utilid, p->pid, seq, &p->o);
    if (!it) break;
    rc = deliver_item(it, 0);
    if (!delivered_ok(rc) && !p->keepgoing) break;
  }
  LOCK();
  c->c[lib][seq > p->items && (p->keepgoing || delivered_ok(rc))
                ? C_COMPLETED
                : C_STOPPED]++;
  UNLOCK();
  return NULL;
}

/* ---------------------------------------------------------------------
 * Lua helpers.
 * ------------------------------------------------------------------ */

static ctx *self_ctx(lua_State *L) {
  return (ctx *)lua_touserdata(L, lua_upvalueindex(1));
}

/* The context given by id at idx, or this state's when none. */
static ctx *opt_ctx(lua_State *L, int idx) {
  ctx *c;
  lua_Integer id;
  if (lua_isnoneornil(L, idx)) return self_ctx(L);
  id = luaL_checkinteger(L, idx);
  LOCK();
  c = id >= 1 && id <= g_nctx ? g_ctx[id] : NULL;
  UNLOCK();
  if (!c) luaL_argerror(L, idx, "unknown context id");
  return c;
}

static int check_lib(lua_State *L, int idx) {
  lua_Integer lib = luaL_optinteger(L, idx, 1);
  luaL_argcheck(L, lib >= 1 && lib <= NLIBS, idx, "lib must be 1 or 2");
  return (int)lib;
}

/* A utilid from Lua: a light userdata, a number, or a numeric string
 * ("0xffffffffffffffff"). Garbage is what we want to hand darksidesync. */
static void *check_utilid(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TLIGHTUSERDATA:
      return lua_touserdata(L, idx);
    case LUA_TNUMBER: {
      lua_Number n = lua_tonumber(L, idx);
      luaL_argcheck(L, n >= 0 && n < 18446744073709551616.0, idx,
                    "utilid out of range");
      return (void *)(uintptr_t)(uint64_t)n;
    }
    case LUA_TSTRING: {
      const char *s = lua_tostring(L, idx);
      char *end;
      unsigned long long v;
      errno = 0;
      v = strtoull(s, &end, 0);
      luaL_argcheck(L, *s && !*end && errno == 0, idx, "bad utilid string");
      return (void *)(uintptr_t)v;
    }
    default:
      luaL_argerror(L, idx, "utilid expected");
      return NULL;
  }
}

static void push_utilid(lua_State *L, void *utilid) {
  if (utilid)
    lua_pushlightuserdata(L, utilid);
  else
    lua_pushnil(L);
}

/* opts.name as a boolean / integer / option index. */
static int opt_bool(lua_State *L, int t, const char *name, int def) {
  int v = def;
  lua_getfield(L, t, name);
  if (!lua_isnil(L, -1)) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* opts.name as a long: a number (an integer exactly on 5.3+; a float is
 * truncated, and one out of long's range raises), or a decimal string, for
 * values a double cannot hold on every Lua version ("9223372036854775807",
 * see testclient.LONG_MAX). */
static long opt_int(lua_State *L, int t, const char *name, long def) {
  long v = def;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    char *end;
    errno = 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || errno)
      luaL_error(L, "option '%s': '%s' is not a decimal long", name, s);
  } else if (!lua_isnil(L, -1)) {
    lua_Number n;
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "option '%s' must be a number", name);
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, -1)) {
      v = (long)lua_tointeger(L, -1);
      lua_pop(L, 1);
      return v;
    }
#endif
    n = lua_tonumber(L, -1);
    /* -(lua_Number)LONG_MIN is 2^63 exactly (LONG_MAX is not a double). */
    if (!(n >= (lua_Number)LONG_MIN && n < -(lua_Number)LONG_MIN))
      luaL_error(L, "option '%s' out of long's range (pass a decimal string)",
                 name);
    v = (long)n;
  }
  lua_pop(L, 1);
  return v;
}

static int opt_mode(lua_State *L, int t, const char *name,
                    const char *const names[]) {
  int i;
  const char *s;
  lua_getfield(L, t, name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  s = lua_tostring(L, -1);
  for (i = 0; s && names[i]; ++i) {
    if (strcmp(s, names[i]) == 0) {
      lua_pop(L, 1);
      return i;
    }
  }
  return luaL_error(L, "option '%s': invalid value '%s'", name, s ? s : "?");
}

/* ---------------------------------------------------------------------
 * Lua functions: producers and counters.
 * ------------------------------------------------------------------ */

/* The delivery options of opts table t (see l_start), into o. */
static void opt_dopts(lua_State *L, int t, dopts *o) {
  memset(o, 0, sizeof *o);
  o->api = (int)opt_int(L, t, "api", 1);
  if (o->api != 1 && o->api != 2) luaL_error(L, "api must be 1 or 2");
  if (o->api == 2 && !api2()) luaL_error(L, "testclient: no API 2v0");
  lua_getfield(L, t, "flags");
  if (lua_type(L, -1) == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, -1), "nowait") != 0)
      luaL_error(L, "option 'flags': 'nowait' or a number expected");
    o->flags = DSS_DELIVER_NOWAIT;
  } else if (!lua_isnil(L, -1)) {
    o->flags = (unsigned int)opt_int(L, t, "flags", 0);
  }
  lua_pop(L, 1);
  o->timeout_ms = opt_int(L, t, "timeout", DSS_TIMEOUT_INFINITE);
  if (o->api == 1 && (o->flags || o->timeout_ms != DSS_TIMEOUT_INFINITE))
    luaL_error(L, "options 'flags' and 'timeout' need api = 2");
  o->blocking = opt_bool(L, t, "blocking", 0);
  lua_getfield(L, t, "decoder"); /* false: no decoder (see l_deliver) */
  if (lua_type(L, -1) != LUA_TBOOLEAN || lua_toboolean(L, -1))
    o->dmode = opt_mode(L, t, "decoder", dmode_names);
  lua_pop(L, 1);
  o->rmode = opt_mode(L, t, "ret", rmode_names);
  o->decode_ms = opt_int(L, t, "decode_ms", 0);
  o->ret_ms = opt_int(L, t, "ret_ms", 0);
  o->stamp = opt_bool(L, t, "stamp", 0);
  if (o->dmode == D_OVERCOUNT && o->blocking)
    luaL_error(L, "decoder 'overcount' is for fire-and-forget items");
}

/* start{threads=, items=, blocking=, decoder=, ret=, lib=, utilid=, api=,
 *       flags=, timeout=, keepgoing=, delay=, decode_ms=, ret_ms=, stamp=}
 *   -> first producer id, number of threads. Producer i delivers items seq
 * 1..items, each after the previous one was accepted (blocking: ended).
 * api = 2: through deliver2, with flags ("nowait" or a number) and timeout
 * (ms; default DSS_TIMEOUT_INFINITE). A producer stops at the first deliver
 * that did not return SUCCESS or UDP_SEND_FAILED, unless keepgoing. delay:
 * ms to sleep before each deliver; decode_ms / ret_ms: ms the decoder /
 * return callback runs (sleeps) when called from Lua. stamp: the callback
 * gets a 5th argument, the CLOCK_MONOTONIC seconds (darksidesync.monotime's
 * clock) taken just before the item's deliver (bench/fibers.lua, FB5). */
static int l_start(lua_State *L) {
  ctx *c = self_ctx(L);
  long threads, items, delay, i;
  int lib, keepgoing, first = 0;
  dopts o;
  void *utilid;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  threads = opt_int(L, 1, "threads", 1);
  items = opt_int(L, 1, "items", 1);
  lib = (int)opt_int(L, 1, "lib", 1);
  keepgoing = opt_bool(L, 1, "keepgoing", 0);
  delay = opt_int(L, 1, "delay", 0);
  opt_dopts(L, 1, &o);
  if (threads < 1 || threads > 64) luaL_error(L, "threads must be 1..64");
  if (items < 0) luaL_error(L, "items must be >= 0");
  if (lib < 1 || lib > NLIBS) luaL_error(L, "lib must be 1 or 2");
  lua_getfield(L, 1, "utilid");
  if (lua_isnil(L, -1)) {
    LOCK();
    utilid = c->utilid[lib];
    UNLOCK();
  } else {
    utilid = check_utilid(L, -1);
  }
  lua_pop(L, 1);
  for (i = 0; i < threads; ++i) {
    producer *p = (producer *)calloc(1, sizeof *p);
    int err;
    if (!p) return luaL_error(L, "out of memory");
    p->c = c;
    p->lib = lib;
    p->utilid = utilid;
    p->o = o;
    p->keepgoing = keepgoing;
    p->delay_ms = delay;
    p->items = items;
    LOCK();
    p->pid = ++c->nproducers;
    p->next = c->producers; /* linked before it runs: join finds it */
    c->producers = p;
    c->c[lib][C_THREADS]++;
    UNLOCK();
    if (!first) first = p->pid;
    err = pthread_create(&p->th, NULL, producer_main, p);
    if (err) {
      LOCK();
      p->joined = 1;
      UNLOCK();
      return luaL_error(L, "pthread_create: %s", strerror(err));
    }
  }
  lua_pushinteger(L, first);
  lua_pushinteger(L, (lua_Integer)threads);
  return 2;
}

/* join([ctxid]) -> true | false, threads still running. Waits for every
 * producer of the context, JOIN_SECONDS at most in all. */
static int l_join(lua_State *L) {
  ctx *c = opt_ctx(L, 1);
  struct timespec deadline;
  int left = 0;
  producer *p;
  const char *scale = getenv("DSS_TEST_TIMESCALE");
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += JOIN_SECONDS * (scale && atoi(scale) > 0 ? atoi(scale) : 1);
  LOCK();
  p = c->producers;
  UNLOCK();
  /* Producers are only added at the head: walking from a snapshot is safe,
   * and p->next never changes once set. */
  for (; p; p = p->next) {
    int joined;
    LOCK();
    joined = p->joined;
    UNLOCK();
    if (joined) continue;
    if (pthread_timedjoin_np(p->th, NULL, &deadline) == 0) {
      LOCK();
      p->joined = 1;
      UNLOCK();
    } else {
      left++;
    }
  }
  lua_pushboolean(L, left == 0);
  if (left == 0) return 1;
  lua_pushinteger(L, left);
  return 2;
}

/* Pushes the counters of one lib of c (only > 0), or of both summed, as a
 * table; errors = {[code] = count}. */
static void push_counters(lua_State *L, ctx *c, int only) {
  long sum[NCOUNTERS], errs[NERRS], other = 0, unknown;
  int i, lib;
  memset(sum, 0, sizeof sum);
  memset(errs, 0, sizeof errs);
  LOCK();
  for (lib = 1; lib <= NLIBS; ++lib) {
    if (only && lib != only) continue;
    for (i = 0; i < NCOUNTERS; ++i) sum[i] += c->c[lib][i];
    for (i = 0; i < NERRS; ++i) errs[i] += c->errs[lib][i];
    other += c->errs_other[lib];
  }
  unknown = g_cancel_unknown;
  UNLOCK();
  lua_createtable(L, 0, NCOUNTERS + 4);
  for (i = 0; i < NCOUNTERS; ++i) {
    lua_pushinteger(L, (lua_Integer)sum[i]);
    lua_setfield(L, -2, counter_names[i]);
  }
  lua_pushinteger(L, (lua_Integer)(sum[C_ALLOCATED] - sum[C_FREED]));
  lua_setfield(L, -2, "live");
  lua_pushinteger(L, (lua_Integer)other);
  lua_setfield(L, -2, "errors_other");
  lua_pushinteger(L, (lua_Integer)unknown);
  lua_setfield(L, -2, "cancel_unknown");
  lua_newtable(L);
  for (i = 0; i < NERRS; ++i) {
    if (!errs[i]) continue;
    lua_pushinteger(L, (lua_Integer)errs[i]);
    lua_rawseti(L, -2, i + ERR_LOW);
  }
  lua_setfield(L, -2, "errors");
}

/* counters([ctxid[, lib]]) -> the counters table (see push_counters). */
static int l_counters(lua_State *L) {
  ctx *c = opt_ctx(L, 1);
  int only = lua_isnoneornil(L, 2) ? 0 : check_lib(L, 2);
  push_counters(L, c, only);
  return 1;
}

/* Adds "name = actual, expected x; " to the message pieces on the stack when
 * the numbers at actual_idx and expected_idx (nil: 0) differ. */
static int diff_piece(lua_State *L, const char *name, lua_Integer key,
                      int actual_idx, int expected_idx) {
  lua_Number a = lua_tonumber(L, actual_idx), e = lua_tonumber(L, expected_idx);
  if (a == e) return 0;
  luaL_checkstack(L, 2, "check");
  if (name)
    lua_pushfstring(L, "%s = %d, expected %d; ", name, (int)a, (int)e);
  else
    lua_pushfstring(L, "errors[%d] = %d, expected %d; ", (int)key, (int)a,
                    (int)e);
  lua_insert(L, 6); /* above the marker, below the working values */
  return 1;
}

/* check(expected[, ctxid[, lib]]): every counter (and "live",
 * "errors_other", "cancel_unknown") equals expected[name], 0 when absent;
 * expected.errors (a {[code] = count} table, or absent: none) must match
 * exactly. Raises naming every difference and every unknown name. */
static int l_check(lua_State *L) {
  ctx *c;
  int only, pieces = 0, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  c = opt_ctx(L, 2);
  only = lua_isnoneornil(L, 3) ? 0 : check_lib(L, 3);
  lua_settop(L, 3);
  push_counters(L, c, only); /* 4: actual */
  lua_pushnil(L);            /* 5: where the pieces go (above this) */
  /* Unknown names in expected. */
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pushliteral(L, "a key that is not a string; ");
      lua_insert(L, 6);
      pieces++;
      continue;
    }
    lua_pushvalue(L, -1);
    lua_rawget(L, 4);
    if (lua_isnil(L, -1)) {
      lua_pushfstring(L, "unknown counter '%s'; ", lua_tostring(L, -2));
      lua_insert(L, 6);
      pieces++;
    }
    lua_pop(L, 1);
  }
  /* Every counter. */
  lua_pushnil(L);
  while (lua_next(L, 4)) { /* key, actual value */
    if (lua_type(L, -1) == LUA_TNUMBER) {
      const char *name = lua_tostring(L, -2);
      lua_getfield(L, 1, name);
      pieces += diff_piece(L, name, 0, -2, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  /* Errors, both ways. */
  lua_getfield(L, 4, "errors"); /* actual errors */
  lua_getfield(L, 1, "errors"); /* expected errors or nil */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  for (i = ERR_LOW; i <= ERR_HIGH; ++i) {
    lua_rawgeti(L, -2, i);
    lua_rawgeti(L, -2, i);
    pieces += diff_piece(L, NULL, i, -2, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
  if (pieces == 0) return 0;
  lua_settop(L, 5 + pieces);
  lua_pushliteral(L, "counters differ: ");
  lua_insert(L, 6);
  lua_concat(L, pieces + 1);
  return lua_error(L);
}

/* reset([ctxid]): zeroes the counters, the notes and the seq of items
 * delivered from Lua (nothing may be in flight). */
static int l_reset(lua_State *L) {
  ctx *c = opt_ctx(L, 1);
  int i;
  LOCK();
  memset(c->c, 0, sizeof c->c);
  memset(c->errs, 0, sizeof c->errs);
  memset(c->errs_other, 0, sizeof c->errs_other);
  for (i = 0; i < c->nnotes; ++i) free(c->notes[i]);
  c->nnotes = 0;
  c->lua_seq = 0;
  for (i = 0; i <= NLIBS; ++i) {
    c->cancel_raise[i] = 0;
    c->unreg_done[i] = 0;
    c->unreg_utilid[i] = NULL;
  }
  g_cancel_unknown = 0;
  UNLOCK();
  return 0;
}

/* ---------------------------------------------------------------------
 * Lua functions: the 1v0 API and the helper.
 * ------------------------------------------------------------------ */

static pDSS_api_1v0_t check_api(lua_State *L) {
  pDSS_api_1v0_t api = DSS_getapi();
  if (!api) luaL_error(L, "testclient: no API (DSS_initialize never ran)");
  return api;
}

static void set_utilid(ctx *c, int lib, void *utilid) {
  LOCK();
  c->utilid[lib] = utilid;
  UNLOCK();
}

/* init() -> utilid: DSS_initialize (raises on failure), DSS_getutilid. */
static int l_init(lua_State *L) {
  void *utilid;
  DSS_initialize(L, cancel1);
  utilid = DSS_getutilid(L);
  set_utilid(self_ctx(L), 1, utilid);
  push_utilid(L, utilid);
  return 1;
}

/* auxutilid() -> DSS_getutilid(L) (raises when not registered). */
static int l_auxutilid(lua_State *L) {
  push_utilid(L, DSS_getutilid(L));
  return 1;
}

/* shutdown(): DSS_shutdown(L, NULL). */
static int l_shutdown(lua_State *L) {
  DSS_shutdown(L, NULL);
  return 0;
}

/* Pushes utilid, then the code, or nil when no errcode was passed. */
static int push_result(lua_State *L, void *utilid, int *err) {
  push_utilid(L, utilid);
  if (err)
    lua_pushinteger(L, *err);
  else
    lua_pushnil(L);
  return 2;
}

/* reg([lib[, withcancel[, noerr[, nullstate]]]]) -> utilid or nil, code.
 * withcancel false: a NULL cancel; noerr true: a NULL errcode (code nil);
 * nullstate true: a NULL lua_State. */
static int l_reg(lua_State *L) {
  int lib = check_lib(L, 1), code = 0;
  int withcancel = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  int *err = lua_toboolean(L, 3) ? NULL : &code;
  lua_State *S = lua_toboolean(L, 4) ? NULL : L;
  void *utilid = check_api(L)->reg(S, libid_of(lib),
                                   withcancel ? cancel_of(lib) : NULL, err);
  if (utilid) set_utilid(self_ctx(L), lib, utilid);
  return push_result(L, utilid, err);
}

/* getutilid([lib[, noerr[, nullstate]]]) -> utilid or nil, code (nil with
 * noerr); nullstate true: a NULL lua_State. */
static int l_getutilid(lua_State *L) {
  int lib = check_lib(L, 1), code = 0;
  int *err = lua_toboolean(L, 2) ? NULL : &code;
  lua_State *S = lua_toboolean(L, 3) ? NULL : L;
  void *utilid = check_api(L)->getutilid(S, libid_of(lib), err);
  return push_result(L, utilid, err);
}

/* utilid([lib]) -> the lib's last utilid in this state (maybe stale). */
static int l_utilid(lua_State *L) {
  int lib = check_lib(L, 1);
  ctx *c = self_ctx(L);
  void *utilid;
  LOCK();
  utilid = c->utilid[lib];
  UNLOCK();
  push_utilid(L, utilid);
  return 1;
}

/* unreg(utilid) -> code. */
static int l_unreg(lua_State *L) {
  void *utilid = check_utilid(L, 1);
  lua_pushinteger(L, check_api(L)->unreg(utilid));
  return 1;
}

/* deliver(utilid[, opts]) -> code. One item from this thread (seq: one
 * more than the last item delivered from Lua, pid 0); opts: lib, decoder
 * (a mode name, or false for a NULL decoder), and the delivery options of
 * start (api, flags, timeout, blocking, ret, decode_ms, ret_ms). A
 * blocking deliver from the Lua thread waits for that thread: only for the
 * deadlock guard and timeouts. */
static int l_deliver(lua_State *L) {
  ctx *c = self_ctx(L);
  void *utilid = check_utilid(L, 1);
  int lib = 1, nodecoder = 0, rc;
  long seq;
  dopts o;
  item *it;
  memset(&o, 0, sizeof o);
  o.api = 1;
  o.timeout_ms = DSS_TIMEOUT_INFINITE;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lib = (int)opt_int(L, 2, "lib", 1);
    luaL_argcheck(L, lib >= 1 && lib <= NLIBS, 2, "lib must be 1 or 2");
    lua_getfield(L, 2, "decoder");
    nodecoder = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    opt_dopts(L, 2, &o);
  }
  LOCK();
  seq = ++c->lua_seq;
  UNLOCK();
  it = item_new(c, NULL, lib, utilid, 0, seq, &o);
  if (!it) return luaL_error(L, "out of memory");
  rc = deliver_item(it, nodecoder);
  lua_pushinteger(L, rc);
  return 1;
}

/* queued([lib or utilid]) -> the 2v0 queued() of the lib's last utilid in
 * this state (default lib 1), or of the utilid given. */
static int l_queued(lua_State *L) {
  pDSS_api_2v0_t a2 = api2();
  void *utilid;
  if (!a2) return luaL_error(L, "testclient: no API 2v0");
  if (lua_isnoneornil(L, 1) ||
      (lua_type(L, 1) == LUA_TNUMBER && lua_tonumber(L, 1) >= 1 &&
       lua_tonumber(L, 1) <= NLIBS)) {
    int lib = check_lib(L, 1);
    ctx *c = self_ctx(L);
    LOCK();
    utilid = c->utilid[lib];
    UNLOCK();
  } else {
    utilid = check_utilid(L, 1);
  }
  lua_pushinteger(L, (lua_Integer)a2->queued(utilid));
  return 1;
}

/* readable(fd[, ms]) -> whether poll(2) finds fd readable within ms
 * (default 0: now). */
static int l_readable(lua_State *L) {
  struct pollfd pfd;
  int r;
  pfd.fd = (int)luaL_checkinteger(L, 1);
  pfd.events = POLLIN;
  pfd.revents = 0;
  do {
    r = poll(&pfd, 1, (int)luaL_optinteger(L, 2, 0));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return luaL_error(L, "poll: %s", strerror(errno));
  if (pfd.revents & (POLLNVAL | POLLERR))
    return luaL_error(L, "poll: fd %d: revents 0x%x", pfd.fd,
                      (unsigned)pfd.revents);
  lua_pushboolean(L, r > 0 && (pfd.revents & POLLIN));
  return 1;
}

/* clock() -> seconds of CLOCK_MONOTONIC. */
static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* setnounreg(flag): when true, cancel does not unregister. */
static int l_setnounreg(lua_State *L) {
  ctx *c = self_ctx(L);
  LOCK();
  c->nounreg = lua_toboolean(L, 1);
  UNLOCK();
  return 0;
}

/* setcancelerror(lib, flag): when true, the lib's cancel (in this
 * context) raises CANCEL_ERROR_MSG on the Lua state that required us, before
 * it unregisters (counted as cancel_raised). */
static int l_setcancelerror(lua_State *L) {
  ctx *c = self_ctx(L);
  int lib = check_lib(L, 1);
  LOCK();
  c->cancel_raise[lib] = lua_toboolean(L, 2);
  UNLOCK();
  return 0;
}

/* The unreg thread: waits (JOIN_SECONDS at most) until a callback of its
 * lib holds (mode "hold"), then unregisters the lib's utilid and records
 * that unreg returned (unreg_done), waking the holder. */
typedef struct unregger {
  ctx *c;
  int lib;
  long held0;  /* held_total when started */
  int done;    /* finished */
  int held;    /* a callback held (else it gave up without unregistering) */
  int rc;      /* unreg's result */
  int joined;
  pthread_t th;
} unregger;

static void *unregger_main(void *arg) {
  unregger *u = (unregger *)arg;
  ctx *c = u->c;
  int lib = u->lib, held, rc = 0;
  void *utilid;
  struct timespec until = deadline_ms(JOIN_SECONDS * 1000L * timescale());
  LOCK();
  while (c->held_total[lib] == u->held0) {
    if (pthread_cond_timedwait(&g_cv, &g_mu, &until) == ETIMEDOUT) break;
  }
  held = c->held_total[lib] != u->held0;
  utilid = c->utilid[lib];
  UNLOCK();
  if (held) rc = DSS_getapi()->unreg(utilid);
  LOCK();
  if (held) {
    c->unreg_utilid[lib] = utilid;
    c->unreg_done[lib] = 1;
  }
  u->held = held;
  u->rc = rc;
  u->done = 1;
  pthread_cond_broadcast(&g_cv);
  UNLOCK();
  return NULL;
}

/* unregonhold([lib]): starts the unreg thread for the lib (default 1): as
 * soon as a callback of the lib in mode "hold" holds, it calls the ABI's
 * unreg on the lib's utilid from its own thread. Callbacks with L != NULL of
 * that utilid that start, or are still running, once that unreg returned
 * count as after_unreg. */
static int l_unregonhold(lua_State *L) {
  ctx *c = self_ctx(L);
  int lib = check_lib(L, 1), err;
  unregger *u;
  check_api(L);
  LOCK();
  u = c->unregger;
  if (u && !u->joined) {
    if (!u->done) {
      UNLOCK();
      return luaL_error(L, "testclient: the last unreg thread is still running");
    }
    UNLOCK();
    pthread_join(u->th, NULL); /* finished: returns at once */
    LOCK();
    u->joined = 1;
  }
  if (!u) {
    u = (unregger *)calloc(1, sizeof *u);
    if (!u) {
      UNLOCK();
      return luaL_error(L, "out of memory");
    }
    c->unregger = u;
  }
  memset(u, 0, sizeof *u);
  u->c = c;
  u->lib = lib;
  u->held0 = c->held_total[lib];
  c->unreg_done[lib] = 0;
  c->unreg_utilid[lib] = NULL;
  UNLOCK();
  err = pthread_create(&u->th, NULL, unregger_main, u);
  if (err) {
    LOCK();
    u->joined = 1;
    UNLOCK();
    return luaL_error(L, "pthread_create: %s", strerror(err));
  }
  return 0;
}

/* unregjoin() -> unreg's code | nil, "no callback held" | false, "still
 * running": joins the unreg thread (JOIN_SECONDS at most). */
static int l_unregjoin(lua_State *L) {
  ctx *c = self_ctx(L);
  unregger *u;
  struct timespec until = deadline_ms(JOIN_SECONDS * 1000L * timescale());
  LOCK();
  u = c->unregger;
  UNLOCK();
  if (!u) return luaL_error(L, "testclient: no unreg thread");
  if (!u->joined) {
    if (pthread_timedjoin_np(u->th, NULL, &until) != 0) {
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "still running");
      return 2;
    }
    LOCK();
    u->joined = 1;
    UNLOCK();
  }
  if (!u->held) {
    lua_pushnil(L);
    lua_pushliteral(L, "no callback held");
    return 2;
  }
  lua_pushinteger(L, u->rc);
  return 1;
}

/* setcallback(f): what the decoder pushes as poll's callback. */
static int l_setcallback(lua_State *L) {
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, CALLBACK_KEY);
  return 0;
}

static int l_ctx(lua_State *L) {
  lua_pushinteger(L, self_ctx(L)->id);
  return 1;
}

/* api() -> the API struct the helper found, as a light userdata. */
static int l_api(lua_State *L) {
  pDSS_api_1v0_t api = DSS_getapi();
  if (api)
    lua_pushlightuserdata(L, api);
  else
    lua_pushnil(L);
  return 1;
}

/* apiversion() -> the struct's version member. */
static int l_apiversion(lua_State *L) {
  lua_pushstring(L, check_api(L)->version);
  return 1;
}

/* api2() -> registry[DSS_REGISTRY_NAME][DSS_API_2v0_KEY] of this state, a
 * light userdata, or nil. */
static int l_api2(lua_State *L) {
  push_api2(L);
  return 1;
}

/* api2version() -> the 2v0 struct's version member. */
static int l_api2version(lua_State *L) {
  pDSS_api_2v0_t a2 = api2();
  if (!a2) return luaL_error(L, "testclient: no API 2v0");
  lua_pushstring(L, a2->version);
  return 1;
}

static int l_islight(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TLIGHTUSERDATA);
  return 1;
}

/* tonumber(utilid) -> its integer value. */
static int l_tonumber(lua_State *L) {
  lua_pushnumber(L, (lua_Number)(uintptr_t)check_utilid(L, 1));
  return 1;
}

/* note(s): appends s to this context's notes (readable after close). */
static int l_note(lua_State *L) {
  ctx *c = self_ctx(L);
  const char *s = luaL_checkstring(L, 1);
  char *copy = (char *)malloc(strlen(s) + 1);
  if (!copy) return luaL_error(L, "out of memory");
  strcpy(copy, s);
  LOCK();
  if (c->nnotes == c->capnotes) {
    int cap = c->capnotes ? 2 * c->capnotes : 8;
    char **n = (char **)realloc(c->notes, (size_t)cap * sizeof *n);
    if (!n) {
      UNLOCK();
      free(copy);
      return luaL_error(L, "out of memory");
    }
    c->notes = n;
    c->capnotes = cap;
  }
  c->notes[c->nnotes++] = copy;
  UNLOCK();
  return 0;
}

/* notes([ctxid]) -> array of the notes. */
static int l_notes(lua_State *L) {
  ctx *c = opt_ctx(L, 1);
  int i;
  lua_newtable(L);
  LOCK();
  for (i = 0; i < c->nnotes; ++i) {
    lua_pushstring(L, c->notes[i]); /* cannot fail short of memory */
    lua_rawseti(L, -2, i + 1);
  }
  UNLOCK();
  return 1;
}

/* ---------------------------------------------------------------------
 * Other Lua states in this process.
 * ------------------------------------------------------------------ */

typedef struct childstate {
  lua_State *L;
} childstate;

static childstate *check_child(lua_State *L) {
  childstate *cs = (childstate *)luaL_checkudata(L, 1, STATE_MT);
  if (!cs->L) luaL_error(L, "testclient: state already closed");
  return cs;
}

/* Runs code in the child; moves its results (nil, booleans, numbers,
 * strings) to L, or raises its error in L. The child's stack is left as it
 * was. */
static int run_in(lua_State *L, lua_State *child, const char *code) {
  int base = lua_gettop(child), n, i;
  if (luaL_loadstring(child, code) != LUA_OK ||
      lua_pcall(child, 0, LUA_MULTRET, 0) != LUA_OK) {
    const char *msg = lua_tostring(child, -1);
    lua_pushstring(L, msg ? msg : "(error object is not a string)");
    lua_settop(child, base);
    return lua_error(L);
  }
  n = lua_gettop(child) - base;
  luaL_checkstack(L, n, "too many results");
  for (i = base + 1; i <= base + n; ++i) {
    switch (lua_type(child, i)) {
      case LUA_TNIL:
        lua_pushnil(L);
        break;
      case LUA_TBOOLEAN:
        lua_pushboolean(L, lua_toboolean(child, i));
        break;
      case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(child, i)) {
          lua_pushinteger(L, lua_tointeger(child, i));
          break;
        }
#endif
        lua_pushnumber(L, lua_tonumber(child, i));
        break;
      case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(child, i, &len);
        lua_pushlstring(L, s, len);
        break;
      }
      default:
        lua_pushfstring(L, "<%s>", luaL_typename(child, i));
        break;
    }
  }
  lua_settop(child, base);
  return n;
}

/* Copies package[field] from L to child. */
static void copy_package_field(lua_State *L, lua_State *child,
                               const char *field) {
  const char *s;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  s = lua_tostring(L, -1);
  if (s) {
    lua_getglobal(child, "package");
    lua_pushstring(child, s);
    lua_setfield(child, -2, field);
    lua_pop(child, 1);
  }
  lua_pop(L, 2);
}

/* newstate(code) -> handle, results of code: a new Lua state with the
 * standard libraries and our package.path/cpath, running code. */
static int l_newstate(lua_State *L) {
  const char *code = luaL_checkstring(L, 1);
  childstate *cs;
  lua_settop(L, 1);
  cs = (childstate *)lua_newuserdata(L, sizeof *cs);
  cs->L = NULL;
  luaL_getmetatable(L, STATE_MT);
  lua_setmetatable(L, -2);
  cs->L = luaL_newstate();
  if (!cs->L) return luaL_error(L, "testclient: luaL_newstate failed");
  luaL_openlibs(cs->L);
  copy_package_field(L, cs->L, "path");
  copy_package_field(L, cs->L, "cpath");
  return 1 + run_in(L, cs->L, code);
}

/* run(handle, code) -> results of code in that state. */
static int l_run(lua_State *L) {
  childstate *cs = check_child(L);
  const char *code = luaL_checkstring(L, 2);
  lua_settop(L, 2);
  return run_in(L, cs->L, code);
}

/* close(handle): lua_close of that state. */
static int l_close(lua_State *L) {
  childstate *cs = check_child(L);
  lua_State *child = cs->L;
  cs->L = NULL;
  lua_close(child);
  return 0;
}

static int state_gc(lua_State *L) {
  childstate *cs = (childstate *)lua_touserdata(L, 1);
  if (cs->L) {
    lua_State *child = cs->L;
    cs->L = NULL;
    lua_close(child);
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Opening.
 * ------------------------------------------------------------------ */

/* Keeps this library mapped for the life of the process: its producer
 * threads may still run our code after the last Lua state that loaded us
 * closed, and the contexts must stay reachable. With TESTCLIENT_NOPIN set in
 * the environment we do not, as most bindings do not (a test runs a process
 * like that to check that our cancel still runs while we are mapped). */
static void pin_self(void) {
  Dl_info info;
  if (dladdr(&g_nctx, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

/* strerror(code) -> DSS_strerror(code), the header's own. */
static int l_strerror(lua_State *L) {
  lua_pushstring(L, DSS_strerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg funcs[] = {{"strerror", l_strerror},
                                 {"start", l_start},
                                 {"join", l_join},
                                 {"counters", l_counters},
                                 {"check", l_check},
                                 {"reset", l_reset},
                                 {"init", l_init},
                                 {"auxutilid", l_auxutilid},
                                 {"shutdown", l_shutdown},
                                 {"reg", l_reg},
                                 {"getutilid", l_getutilid},
                                 {"utilid", l_utilid},
                                 {"unreg", l_unreg},
                                 {"deliver", l_deliver},
                                 {"setnounreg", l_setnounreg},
                                 {"setcancelerror", l_setcancelerror},
                                 {"unregonhold", l_unregonhold},
                                 {"unregjoin", l_unregjoin},
                                 {"setcallback", l_setcallback},
                                 {"ctx", l_ctx},
                                 {"api", l_api},
                                 {"apiversion", l_apiversion},
                                 {"api2", l_api2},
                                 {"api2version", l_api2version},
                                 {"queued", l_queued},
                                 {"readable", l_readable},
                                 {"clock", l_clock},
                                 {"islight", l_islight},
                                 {"tonumber", l_tonumber},
                                 {"note", l_note},
                                 {"notes", l_notes},
                                 {"newstate", l_newstate},
                                 {"run", l_run},
                                 {"close", l_close},
                                 {NULL, NULL}};

int luaopen_testclient(lua_State *L) {
  ctx *c;
  const luaL_Reg *f;
  if (!getenv("TESTCLIENT_NOPIN")) pin_self();
  DSS_initialize(L, cancel1); /* raises without darksidesync */
  lookup_api2(L);
  c = (ctx *)calloc(1, sizeof *c);
  if (!c) return luaL_error(L, "out of memory");
  LOCK();
  if (g_nctx == MAXCTX) {
    UNLOCK();
    free(c);
    return luaL_error(L, "testclient: too many contexts");
  }
  c->id = ++g_nctx;
  g_ctx[c->id] = c;
  c->L = L;
  UNLOCK();
  set_utilid(c, 1, DSS_getutilid(L));

  if (luaL_newmetatable(L, STATE_MT)) {
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);

  lua_newtable(L);
  for (f = funcs; f->name; ++f) {
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  /* long's limits as decimal strings (opt_int takes them; a double cannot
   * hold LONG_MAX). */
  {
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", LONG_MAX);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "LONG_MAX");
    snprintf(buf, sizeof buf, "%ld", LONG_MIN);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "LONG_MIN");
  }
  return 1;
}
