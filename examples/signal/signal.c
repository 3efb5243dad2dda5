/*
 * signal.c -- dss_signal: POSIX signals delivered to Lua callbacks through
 * DarkSideSync. What 1.0's `luaexit` example set out to be. Built only
 * against include/ (it never links against darksidesync); the client helper
 * darksidesync_aux.c is compiled as a file of its own next to this one.
 *
 *   local dss = require "darksidesync"
 *   local sig = require "dss_signal"
 *   sig.watch("SIGTERM", function(name) print("got", name) end)
 *   -- ... the Lua loop drains darksidesync.poll() as usual
 *
 * Signals: SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 ("INT", ... also work).
 * Lua API and its errors: examples/signal/README.md.
 *
 * How it works:
 *
 *  - The handler (on_signal) does only async-signal-safe work: it writes one
 *    byte, the signal number, to a self-pipe (both ends O_NONBLOCK and
 *    O_CLOEXEC), saving and restoring errno. It is installed with sigaction
 *    and SA_RESTART, so system calls it interrupts resume.
 *
 *  - A watcher thread (all signals blocked in it) sleeps in poll() on the
 *    pipe's read end; for each byte it allocates an item and hands it to
 *    darksidesync (fire and forget). poll() on the Lua thread runs our decoder,
 *    which pushes the watch's callback (a registry reference) and the signal
 *    name, or returns 0 when that watch has gone in the meantime.
 *
 *  - Why not signalfd: it only sees signals that are blocked in *every*
 *    thread of the process, else they go to their disposition as usual. A
 *    library loaded into an interpreter cannot block signals in threads it did
 *    not create (the main thread, other libraries' threads), so signalfd would
 *    miss signals. A handler plus a self-pipe works whichever thread the
 *    kernel picks, and is portable POSIX.
 *
 *  - Signals are process-wide: one Lua state at a time may watch (the
 *    "owner"). The watcher thread runs exactly while the owner watches at
 *    least one signal. When the owner's Lua state closes, darksidesync calls
 *    our cancel callback: it restores the dispositions, stops the watcher
 *    thread (wakes it through the pipe, joins it) and unregisters, which
 *    cancels the items still queued (our decoder with L == NULL frees them).
 *
 *  - The library pins itself in memory (RTLD_NODELETE): a signal handler's
 *    address and this process-wide state must outlive any one Lua state that
 *    loaded us.
 *
 * Locks: g_ctl serialises the control operations (watch, unwatch, stop,
 * cancel) and is held across starting and joining the watcher thread; the
 * watcher thread never takes it. g_lock guards the data the watcher thread and
 * the decoder read; it is never held while calling darksidesync, Lua, or
 * joining. Fields marked "both" are written under both locks and may be read
 * under either.
 */
#define _GNU_SOURCE /* pipe2, dladdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "darksidesync_aux.h"

#define NSIGS 5
#define EXPECTED "SIGINT, SIGTERM, SIGHUP, SIGUSR1 or SIGUSR2"

static const struct {
  const char *name;
  int signo;
} SIGS[NSIGS] = {{"SIGINT", SIGINT},
                 {"SIGTERM", SIGTERM},
                 {"SIGHUP", SIGHUP},
                 {"SIGUSR1", SIGUSR1},
                 {"SIGUSR2", SIGUSR2}};

/* One watch per signal. */
typedef struct {
  int watched;         /* both: our handler is installed */
  unsigned gen;        /* both: bumped at each unwatch; stale items see it */
  int ref;             /* both: the callback, in the owner's registry */
  struct sigaction old; /* both: the disposition we replaced */
} watch_t;

static pthread_mutex_t g_ctl = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* The self-pipe: created once (under g_ctl) before the first handler is
 * installed, and never closed. A handler already running on another thread
 * when we restore a disposition may still write to it; closing it then could
 * make that write land in whatever file reused the descriptor. */
static int g_pipe[2] = {-1, -1};

static void *g_owner = NULL; /* both: utilid of the watching state, or NULL */
static int g_nwatched = 0;   /* both */
static watch_t g_w[NSIGS];   /* both */
static int g_stop = 0;       /* g_lock: the watcher thread is to exit */
static pthread_t g_thread;   /* g_ctl */
static int g_running = 0;    /* g_ctl: g_thread was started, not joined */

/* One delivered signal. */
typedef struct {
  int idx;      /* index into SIGS */
  unsigned gen; /* the watch's generation when it was delivered */
} item_t;

/* ---------------------------------------------------------------------
 * The signal handler: async-signal-safe only.
 * ------------------------------------------------------------------ */

static void on_signal(int signo) {
  int saved = errno;
  unsigned char b = (unsigned char)signo;
  /* Pipe full (64 KiB of signals unread): EAGAIN, the signal is dropped. */
  ssize_t r = write(g_pipe[1], &b, 1);
  (void)r;
  errno = saved;
}

/* ---------------------------------------------------------------------
 * The decoder: on the Lua thread, from darksidesync.poll().
 * ------------------------------------------------------------------ */

static int decode(lua_State *L, void *pData, void *uid) {
  item_t *it = (item_t *)pData;
  int idx = it->idx, ref = LUA_NOREF;
  unsigned gen = it->gen;
  free(it); /* fire and forget: every decoder call is the item's end */
  if (L == NULL) return 0; /* cancelled: touch no Lua */
  pthread_mutex_lock(&g_lock);
  if (g_owner == uid && g_w[idx].watched && g_w[idx].gen == gen)
    ref = g_w[idx].ref;
  pthread_mutex_unlock(&g_lock);
  if (ref == LUA_NOREF) return 0; /* unwatched since: nothing to call */
  /* The reference stays valid: only this Lua state's thread changes it. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushstring(L, SIGS[idx].name);
  return 2;
}

/* ---------------------------------------------------------------------
 * The watcher thread.
 * ------------------------------------------------------------------ */

static int index_of(int signo) {
  int i;
  for (i = 0; i < NSIGS; i++)
    if (SIGS[i].signo == signo) return i;
  return -1;
}

/* Hands one received signal to darksidesync, if it is still watched. */
static void forward(int signo) {
  int idx = index_of(signo), watched = 0;
  void *uid = NULL;
  unsigned gen = 0;
  item_t *it;
  if (idx < 0) return;
  pthread_mutex_lock(&g_lock);
  if (g_w[idx].watched) {
    watched = 1;
    uid = g_owner;
    gen = g_w[idx].gen;
  }
  pthread_mutex_unlock(&g_lock);
  if (!watched) return;
  it = (item_t *)malloc(sizeof *it);
  if (it == NULL) return; /* out of memory: the signal is dropped */
  it->idx = idx;
  it->gen = gen;
  /* Fails when the owner's state is closing: then the item is still ours. */
  if (DSS_deliver(uid, decode, NULL, it) < DSS_SUCCESS) free(it);
}

static void *watcher(void *arg) {
  unsigned char buf[128];
  (void)arg;
  for (;;) {
    ssize_t n, i;
    int stop;
    pthread_mutex_lock(&g_lock);
    stop = g_stop;
    pthread_mutex_unlock(&g_lock);
    if (stop) break;
    n = read(g_pipe[0], buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p;
        p.fd = g_pipe[0];
        p.events = POLLIN;
        p.revents = 0;
        (void)poll(&p, 1, -1); /* until a signal's byte or the wake byte */
      } else if (errno != EINTR) {
        break; /* cannot happen */
      }
      continue;
    }
    if (n == 0) break; /* cannot happen: we hold the write end */
    for (i = 0; i < n; i++)
      if (buf[i] != 0) forward(buf[i]); /* 0 is the wake byte */
  }
  return NULL;
}

/* Under g_ctl. Creates the self-pipe once. Returns 0 with errno set on
 * failure. */
static int ensure_pipe(void) {
  if (g_pipe[0] >= 0) return 1;
#ifdef __linux__
  if (pipe2(g_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return 0;
#else
  {
    int i;
    if (pipe(g_pipe) != 0) return 0;
    for (i = 0; i < 2; i++) {
      fcntl(g_pipe[i], F_SETFL, fcntl(g_pipe[i], F_GETFL) | O_NONBLOCK);
      fcntl(g_pipe[i], F_SETFD, FD_CLOEXEC);
    }
  }
#endif
  return 1;
}

/* Under g_ctl. Empties the pipe of bytes nobody will forward. */
static void drain_pipe(void) {
  unsigned char buf[128];
  while (read(g_pipe[0], buf, sizeof buf) > 0) {
  }
}

/* Under g_ctl. Starts the watcher thread with every signal blocked in it,
 * so that the kernel never picks it to run a handler. Returns 0 with errno
 * set on failure. */
static int start_thread(void) {
  sigset_t all, saved;
  int rc;
  if (g_running) return 1;
  drain_pipe();
  pthread_mutex_lock(&g_lock);
  g_stop = 0;
  pthread_mutex_unlock(&g_lock);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  rc = pthread_create(&g_thread, NULL, watcher, NULL);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  if (rc != 0) {
    errno = rc;
    return 0;
  }
  g_running = 1;
  return 1;
}

/* Under g_ctl, not g_lock. Wakes the watcher thread and joins it. */
static void stop_thread(void) {
  unsigned char b = 0;
  ssize_t r;
  if (!g_running) return;
  pthread_mutex_lock(&g_lock);
  g_stop = 1;
  pthread_mutex_unlock(&g_lock);
  /* If the pipe is full this fails, but then the thread is not asleep:
   * it reads, and sees g_stop before its next read. */
  r = write(g_pipe[1], &b, 1);
  (void)r;
  pthread_join(g_thread, NULL);
  g_running = 0;
  drain_pipe();
}

/* ---------------------------------------------------------------------
 * Dispositions.
 * ------------------------------------------------------------------ */

static int is_ours(const struct sigaction *sa) {
  return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == on_signal;
}

/* Under g_ctl and g_lock. Ends the watch of SIGS[idx]: puts back the
 * disposition we replaced, unless someone replaced ours since (then theirs
 * stays). Returns the callback's reference, for the caller to release. */
static int unwatch_locked(int idx) {
  struct sigaction cur;
  int ref = g_w[idx].ref;
  if (sigaction(SIGS[idx].signo, NULL, &cur) == 0 && is_ours(&cur))
    sigaction(SIGS[idx].signo, &g_w[idx].old, NULL);
  g_w[idx].watched = 0;
  g_w[idx].gen++;
  g_w[idx].ref = LUA_NOREF;
  if (--g_nwatched == 0) g_owner = NULL;
  return ref;
}

/* Under g_ctl. Ends every watch and stops the watcher thread. The
 * callbacks' references go to refs (LUA_NOREF where none). */
static void release_all(int refs[NSIGS]) {
  int i;
  pthread_mutex_lock(&g_lock);
  for (i = 0; i < NSIGS; i++)
    refs[i] = g_w[i].watched ? unwatch_locked(i) : LUA_NOREF;
  g_owner = NULL;
  pthread_mutex_unlock(&g_lock);
  stop_thread();
}

/* ---------------------------------------------------------------------
 * darksidesync's cancel: the Lua state closes.
 * ------------------------------------------------------------------ */

static void cancel(void *uid) {
  int refs[NSIGS];
  pthread_mutex_lock(&g_ctl);
  if (g_owner == uid) release_all(refs); /* the state's registry is going:
                                            nothing to unref */
  pthread_mutex_unlock(&g_ctl);
  /* Unregister; darksidesync cancels our items still queued. */
  DSS_shutdown(NULL, uid);
}

/* ---------------------------------------------------------------------
 * Lua functions.
 * ------------------------------------------------------------------ */

/* The index in SIGS of the signal named by argument arg, or raises. */
static int check_signal(lua_State *L, int arg) {
  size_t len, n;
  const char *s;
  int i;
  if (lua_type(L, arg) != LUA_TSTRING)
    return luaL_argerror(L, arg,
                         lua_pushfstring(L, "signal name expected, got %s",
                                         luaL_typename(L, arg)));
  s = lua_tolstring(L, arg, &len);
  for (i = 0; i < NSIGS; i++) {
    n = strlen(SIGS[i].name);
    if ((len == n && memcmp(s, SIGS[i].name, n) == 0) ||
        (len == n - 3 && memcmp(s, SIGS[i].name + 3, n - 3) == 0))
      return i;
  }
  return luaL_argerror(
      L, arg,
      lua_pushfstring(L, "unknown signal '%s'; expected " EXPECTED, s));
}

/* This library's utilid in L, or NULL (never raises). */
static void *my_utilid(lua_State *L) {
  pDSS_api_1v0_t api = DSS_getapi();
  return api ? api->getutilid(L, DSS_getlibid(), NULL) : NULL;
}

/* Under g_ctl. Returns 0 on success, else writes the message to msg. */
static int do_watch(void *uid, int idx, int ref, int *old, char *msg,
                    size_t size) {
  struct sigaction sa;
  if (g_owner != NULL && g_owner != uid) {
    snprintf(msg, size,
             "dss_signal: another Lua state is watching signals "
             "(only one may at a time)");
    return -1;
  }
  if (!ensure_pipe()) {
    snprintf(msg, size, "dss_signal: cannot create the self-pipe: %s",
             strerror(errno));
    return -1;
  }
  if (!start_thread()) {
    snprintf(msg, size, "dss_signal: cannot start the watcher thread: %s",
             strerror(errno));
    return -1;
  }
  pthread_mutex_lock(&g_lock);
  if (g_w[idx].watched) { /* a new callback for the same watch */
    *old = g_w[idx].ref;
    g_w[idx].ref = ref;
    pthread_mutex_unlock(&g_lock);
    return 0;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGS[idx].signo, &sa, &g_w[idx].old) != 0) {
    int e = errno;
    pthread_mutex_unlock(&g_lock);
    if (g_nwatched == 0) stop_thread();
    snprintf(msg, size, "dss_signal: cannot watch %s: %s", SIGS[idx].name,
             strerror(e));
    return -1;
  }
  g_w[idx].watched = 1;
  g_w[idx].ref = ref;
  g_nwatched++;
  g_owner = uid;
  pthread_mutex_unlock(&g_lock);
  return 0;
}

/* watch(name, callback) */
static int l_watch(lua_State *L) {
  int idx = check_signal(L, 1), ref, old = LUA_NOREF, rc;
  void *uid;
  char msg[200];
  if (lua_type(L, 2) != LUA_TFUNCTION)
    return luaL_argerror(L, 2,
                         lua_pushfstring(L, "function expected, got %s",
                                         luaL_typename(L, 2)));
  uid = DSS_getutilid(L); /* raises if darksidesync is not running here */
  lua_settop(L, 2);
  ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: before any lock */
  pthread_mutex_lock(&g_ctl);
  rc = do_watch(uid, idx, ref, &old, msg, sizeof msg);
  pthread_mutex_unlock(&g_ctl);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "%s", msg);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, old);
  return 0;
}

/* unwatch(name) -> true if this state watched it, else false */
static int l_unwatch(lua_State *L) {
  int idx = check_signal(L, 1), ref = LUA_NOREF, found = 0;
  void *uid = my_utilid(L);
  pthread_mutex_lock(&g_ctl);
  if (uid != NULL && g_owner == uid && g_w[idx].watched) {
    found = 1;
    pthread_mutex_lock(&g_lock);
    ref = unwatch_locked(idx);
    pthread_mutex_unlock(&g_lock);
    if (g_nwatched == 0) stop_thread();
  }
  pthread_mutex_unlock(&g_ctl);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  lua_pushboolean(L, found);
  return 1;
}

/* stop(): unwatch everything this state watches; stop the thread. */
static int l_stop(lua_State *L) {
  int refs[NSIGS], i, mine = 0;
  void *uid = my_utilid(L);
  pthread_mutex_lock(&g_ctl);
  if (uid != NULL && g_owner == uid) {
    mine = 1;
    release_all(refs);
  }
  pthread_mutex_unlock(&g_ctl);
  if (mine)
    for (i = 0; i < NSIGS; i++) luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
  return 0;
}

/* watching() -> { names watched by this state } */
static int l_watching(lua_State *L) {
  int watched[NSIGS], i, n = 0;
  void *uid = my_utilid(L);
  pthread_mutex_lock(&g_lock);
  for (i = 0; i < NSIGS; i++)
    watched[i] = uid != NULL && g_owner == uid && g_w[i].watched;
  pthread_mutex_unlock(&g_lock);
  lua_newtable(L);
  for (i = 0; i < NSIGS; i++) {
    if (!watched[i]) continue;
    lua_pushstring(L, SIGS[i].name);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* status() -> "stopped" | "watching" | "busy" */
static int l_status(lua_State *L) {
  void *uid = my_utilid(L), *owner;
  pthread_mutex_lock(&g_lock);
  owner = g_owner;
  pthread_mutex_unlock(&g_lock);
  lua_pushstring(L, owner == NULL  ? "stopped"
                    : owner == uid ? "watching"
                                   : "busy");
  return 1;
}

/* disposition(name) -> "default" | "ignore" | "watched" | "handler" */
static int l_disposition(lua_State *L) {
  int idx = check_signal(L, 1);
  struct sigaction cur;
  if (sigaction(SIGS[idx].signo, NULL, &cur) != 0)
    return luaL_error(L, "dss_signal: cannot query %s: %s", SIGS[idx].name,
                      strerror(errno));
  if (is_ours(&cur))
    lua_pushliteral(L, "watched");
  else if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL)
    lua_pushliteral(L, "default");
  else if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN)
    lua_pushliteral(L, "ignore");
  else
    lua_pushliteral(L, "handler");
  return 1;
}

/* raise(name) -> true. raise() sends the signal to the calling thread and
 * runs its handler before returning. */
static int l_raise(lua_State *L) {
  int idx = check_signal(L, 1);
  if (raise(SIGS[idx].signo) != 0)
    return luaL_error(L, "dss_signal: cannot raise %s: %s", SIGS[idx].name,
                      strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------------
 * Opening.
 * ------------------------------------------------------------------ */

/* Once per process: keeps this library mapped for the life of the process
 * (see the top) and sets up the watches. */
static void init_once(void) {
  Dl_info info;
  int i;
  if (dladdr((void *)&g_pipe, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
  for (i = 0; i < NSIGS; i++) {
    g_w[i].watched = 0;
    g_w[i].gen = 0;
    g_w[i].ref = LUA_NOREF;
  }
}

int luaopen_dss_signal(lua_State *L) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  static const luaL_Reg funcs[] = {{"watch", l_watch},
                                   {"unwatch", l_unwatch},
                                   {"stop", l_stop},
                                   {"watching", l_watching},
                                   {"status", l_status},
                                   {"disposition", l_disposition},
                                   {"raise", l_raise},
                                   {NULL, NULL}};
  pthread_once(&once, init_once);
  DSS_initialize(L, cancel); /* raises if darksidesync is not loaded */
  lua_newtable(L);
#if LUA_VERSION_NUM >= 502
  luaL_setfuncs(L, funcs, 0);
#else
  luaL_register(L, NULL, funcs);
#endif
  return 1;
}
