/*
 * darksidesync_api.h -- the DarkSideSync C ABI: "DSS API 1v0", and the
 * later tables beside it ("2v0", "2v1", "2v2").
 *
 * Client libraries (bindings to libraries that call back from their own
 * threads) compile against this header and never link against darksidesync.
 * They find the API struct through the Lua registry:
 *
 *   registry["DSS.DarkSideSync"]["DSS API 1v0"] -> light userdata -> DSS_api_1v0_t
 *
 * The layout of DSS_api_1v0_t, the callback signatures and the codes below
 * are the ABI of DarkSideSync 1.0 and never change. See docs/c-api.md.
 *
 * This header is plain C and C++ compatible. Like 1.0's, it includes <lua.h>
 * so that 1.0 client sources build unchanged; define DSS_NO_LUA_H before
 * including it to do without (lua_State is only used through pointers).
 */
#ifndef darksidesync_api_h
#define darksidesync_api_h

#include <stddef.h> /* size_t */

#ifndef DSS_NO_LUA_H
#ifdef __cplusplus
extern "C" {
#endif
#include <lua.h>
#ifdef __cplusplus
}
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

/* Version string of the module, stored in registry table under "Version". */
#define DSS_VERSION "2.2.0"
/* Registry key of the table that holds the API structs. */
#define DSS_REGISTRY_NAME "DSS.DarkSideSync"
/* Key, within that table, of the version string. */
#define DSS_VERSION_KEY "Version"
/* Key of the 1v0 API struct; also the value of its 'version' member. */
#define DSS_API_1v0_KEY "DSS API 1v0"
/* Key of the 2v0 API struct (beside 1v0; both are always present). */
#define DSS_API_2v0_KEY "DSS API 2v0"
/* Key of the 2v1 API struct: 2v0 plus client context (regc, deliverc). */
#define DSS_API_2v1_KEY "DSS API 2v1"
/* Key of the 2v2 API struct: 2v1 plus channels fed from C threads. */
#define DSS_API_2v2_KEY "DSS API 2v2"

/* ------------------------------------------------------------------------
 * Callbacks implemented by the client library.
 * --------------------------------------------------------------------- */

/*
 * Decoder. Called on the Lua thread by poll() with L set: push the Lua
 * callback function followed by its arguments and return how many values
 * were pushed (> 0); or return 0 to end the item's cycle there (a blocked
 * producer is then released and its return callback is NOT called).
 *
 * Called with L == NULL when the item is cancelled while still queued
 * (unregister, or the Lua state closing): release pData's resources and
 * return. Never touch Lua then.
 *
 * 1.0 required that decoders never raise Lua errors. Ours survive it: the
 * item still ends (as if 0 had been returned) and the error is re-raised to
 * the caller of poll().
 */
typedef int (*DSS_decoder_1v0_t)(struct lua_State *L, void *pData,
                                 void *utilid);

/*
 * Return callback, for blocking deliveries. Called on the Lua thread when
 * Lua calls the waiting-thread callback: the Lua arguments are on the stack
 * (the callback userdata itself removed). Store what the producer needs in
 * pData, push what the Lua call should return and return that count. After
 * it returns, the blocked producer is released.
 *
 * garbage == 1: the waiting-thread callback was garbage collected without
 * being called; there are no Lua arguments.
 * L == NULL: the item was cancelled (unregister, or the Lua state closing).
 */
typedef int (*DSS_return_1v0_t)(struct lua_State *L, void *pData,
                                void *utilid, int garbage);

/*
 * Cancel. Called (on the thread closing the Lua state) when the Lua state
 * the client registered with goes away. The client stops delivering and
 * should call unreg(utilid); if it does not, darksidesync unregisters it
 * when cancel returns.
 */
typedef void (*DSS_cancel_1v0_t)(void *utilid);

/* ------------------------------------------------------------------------
 * Functions implemented by darksidesync (members of the API struct).
 * --------------------------------------------------------------------- */

/*
 * Registers the library 'libid' (any pointer unique to the library, e.g.
 * the address of a static) with the Lua state L. Call on L's thread.
 * Returns the utilid, or NULL with *errcode set to DSS_ERR_NOT_STARTED,
 * DSS_ERR_NO_CANCEL_PROVIDED or DSS_ERR_OUT_OF_MEMORY. If the library is
 * already registered with L, returns the existing utilid with
 * DSS_ERR_ALREADY_REGISTERED and changes nothing. errcode may be NULL.
 */
typedef void *(*DSS_register_1v0_t)(struct lua_State *L, void *libid,
                                    DSS_cancel_1v0_t pCancel, int *errcode);

/*
 * Returns the utilid registered for (L, libid), or NULL with *errcode set to
 * DSS_ERR_NOT_STARTED or DSS_ERR_UNKNOWN_LIB. Call on L's thread.
 */
typedef void *(*DSS_getutilid_1v0_t)(struct lua_State *L, void *libid,
                                     int *errcode);

/*
 * Queues an item for the Lua state of utilid. Safe from any thread.
 * pReturn == NULL: fire and forget, returns at once.
 * pReturn != NULL: blocks until the item's cycle is complete (its return
 * callback ran, it was cancelled, or the decoder returned 0).
 * Returns DSS_SUCCESS, or DSS_ERR_UDP_SEND_FAILED (a warning: the item was
 * queued, only the notification failed). Errors (nothing queued):
 * DSS_ERR_INVALID_UTILID (unknown, stale or unregistered id),
 * DSS_ERR_NO_DECODE_PROVIDED, DSS_ERR_NOT_STARTED (the state is closing),
 * DSS_ERR_OUT_OF_MEMORY.
 */
typedef int (*DSS_deliver_1v0_t)(void *utilid, DSS_decoder_1v0_t pDecode,
                                 DSS_return_1v0_t pReturn, void *pData);

/*
 * Removes the registration; every item of utilid still queued or waiting
 * for its return is cancelled and its producer released. Safe from any
 * thread. Returns DSS_SUCCESS or DSS_ERR_INVALID_UTILID.
 */
typedef int (*DSS_unregister_1v0_t)(void *utilid);

/* The 1v0 API. Member order is ABI. */
typedef struct DSS_api_1v0_s *pDSS_api_1v0_t;
typedef struct DSS_api_1v0_s {
  const char *version; /* "DSS API 1v0" */
  DSS_register_1v0_t reg;
  DSS_getutilid_1v0_t getutilid;
  DSS_deliver_1v0_t deliver;
  DSS_unregister_1v0_t unreg;
} DSS_api_1v0_t;

/* ------------------------------------------------------------------------
 * API 2v0: everything of 1v0, in the same order and with the same meaning,
 * then the additions. Found under registry["DSS.DarkSideSync"]["DSS API
 * 2v0"]. A client compiled for 1v0 keeps using 1v0; both stay published.
 * --------------------------------------------------------------------- */

/* deliver2 flags. */
/* When the queue is full (see setmaxqueue), fail at once with
 * DSS_ERR_QUEUE_FULL instead of waiting for room. */
#define DSS_DELIVER_NOWAIT 0x1u

/* deliver2 timeout_ms: wait forever. */
#define DSS_TIMEOUT_INFINITE (-1L)
/* The longest timeout that is a limit: 100 years of 365.25 days, in ms. A
 * larger timeout_ms (possible where long has 64 bits) is no limit at all,
 * as DSS_TIMEOUT_INFINITE: no clock could hold its deadline. */
#define DSS_TIMEOUT_MAX_MS 3155760000000LL

/*
 * As the 1v0 deliver, plus:
 * - flags: 0 or DSS_DELIVER_NOWAIT (other bits must be 0, else
 *   DSS_ERR_INVALID_ARGUMENT).
 * - timeout_ms: the longest this call blocks, in milliseconds, for room in a
 *   full queue and (pReturn != NULL) for the item's cycle to complete.
 *   < 0 (DSS_TIMEOUT_INFINITE) or > DSS_TIMEOUT_MAX_MS: no limit.
 *   0: never wait.
 * Returns what 1v0 deliver returns, and:
 * - DSS_ERR_QUEUE_FULL: the queue is full and DSS_DELIVER_NOWAIT was given
 *   (or timeout_ms == 0); nothing queued.
 * - DSS_ERR_TIMEOUT: no room came in time (nothing queued); or, for a
 *   blocking item, its cycle did not complete in time. Ownership on timeout:
 *   before deliver2 returns, darksidesync has ended the item by
 *   cancellation ON THE PRODUCER'S THREAD: an item still queued is removed
 *   and gets decode(NULL, pData, utilid); an item already decoded and
 *   waiting for Lua's answer gets ret(NULL, pData, utilid, 0), and its
 *   waiting-thread callback is spent (calling it later returns nothing and
 *   never reaches pData). If the decoder or return callback is running at
 *   the deadline, deliver2 waits for it to finish first (so the timeout can
 *   be exceeded by that callback's run time); then the item ended normally
 *   and deliver2 returns what it would have without a timeout. Either way
 *   nothing touches pData after deliver2 returned.
 * - DSS_ERR_CANCELLED: a blocking item was cancelled (unreg, or the Lua
 *   state closing) instead of answered; ret(NULL, ...) or decode(NULL, ...)
 *   ran. (1v0 deliver returns DSS_SUCCESS then, as 1.0 did.)
 * - DSS_ERR_WOULD_DEADLOCK: the call would wait (a blocking item, or no room
 *   in a full queue) on the very thread that is running this state's
 *   poll/dispatch/wait right now; nothing queued. 1v0 deliver returns it
 *   too, instead of hanging forever.
 */
typedef int (*DSS_deliver_2v0_t)(void *utilid, DSS_decoder_1v0_t pDecode,
                                 DSS_return_1v0_t pReturn, void *pData,
                                 unsigned int flags, long timeout_ms);

/*
 * The number of items of utilid queued now (not yet taken by poll or
 * dispatch), or a negative code: DSS_ERR_INVALID_UTILID. Safe from any
 * thread; costs a walk over the queue.
 */
typedef long (*DSS_queued_2v0_t)(void *utilid);

/*
 * Client context (2v1): a registration made with regc carries a context
 * pointer and a name. Its callbacks get the context as their last argument
 * (so a client needs no global variables), and darksidesync's error
 * messages about its callbacks name it. Its items are delivered with
 * deliverc, whose callbacks have these types; deliver/deliver2 (1v0-typed
 * callbacks) refuse its utilid with DSS_ERR_INVALID_ARGUMENT, as deliverc
 * refuses a utilid from reg. Apart from the context argument, every
 * callback has the meaning of its 1v0 counterpart.
 */
typedef int (*DSS_decoder_2v0_t)(struct lua_State *L, void *pData,
                                 void *utilid, void *context);
typedef int (*DSS_return_2v0_t)(struct lua_State *L, void *pData,
                                void *utilid, int garbage, void *context);
typedef void (*DSS_cancel_2v0_t)(void *utilid, void *context);

/*
 * As reg, plus: context (any pointer, handed back to every callback of this
 * registration; darksidesync never dereferences it) and name (a short name
 * for error messages, e.g. "mqtt"; copied; NULL for none). Call on L's
 * thread. Same results and codes as reg.
 */
typedef void *(*DSS_regc_2v0_t)(struct lua_State *L, void *libid,
                                DSS_cancel_2v0_t pCancel, void *context,
                                const char *name, int *errcode);

/* As deliver2, for a utilid from regc, with context-taking callbacks. */
typedef int (*DSS_deliverc_2v0_t)(void *utilid, DSS_decoder_2v0_t pDecode,
                                  DSS_return_2v0_t pReturn, void *pData,
                                  unsigned int flags, long timeout_ms);

/* The 2v0 API. Member order is ABI; the first five are 1v0's. */
typedef struct DSS_api_2v0_s *pDSS_api_2v0_t;
typedef struct DSS_api_2v0_s {
  const char *version; /* "DSS API 2v0" */
  DSS_register_1v0_t reg;
  DSS_getutilid_1v0_t getutilid;
  DSS_deliver_1v0_t deliver;
  DSS_unregister_1v0_t unreg;
  DSS_deliver_2v0_t deliver2;
  DSS_queued_2v0_t queued;
} DSS_api_2v0_t;

/* The 2v1 API (darksidesync 2.1): 2v0's members, then the client-context
 * calls. Found under registry["DSS.DarkSideSync"]["DSS API 2v1"]; an older
 * darksidesync has no such key (fall back to 2v0 or 1v0). */
typedef struct DSS_api_2v1_s *pDSS_api_2v1_t;
typedef struct DSS_api_2v1_s {
  const char *version; /* "DSS API 2v1" */
  DSS_register_1v0_t reg;
  DSS_getutilid_1v0_t getutilid;
  DSS_deliver_1v0_t deliver;
  DSS_unregister_1v0_t unreg;
  DSS_deliver_2v0_t deliver2;
  DSS_queued_2v0_t queued;
  DSS_regc_2v0_t regc;
  DSS_deliverc_2v0_t deliverc;
} DSS_api_2v1_t;

/* ------------------------------------------------------------------------
 * API 2v2 (darksidesync 2.2): 2v1's members, then channels fed from C
 * threads. A Lua channel (require "darksidesync.channel") handed to a C
 * library becomes a reference the library keeps and puts values into from
 * any thread of its own, with no Lua state: nil, booleans, integers,
 * numbers and strings (byte buffers). A get in any Lua state receives them
 * as if a Lua put had sent them. See docs/c-api.md, "API 2v2".
 * --------------------------------------------------------------------- */

/* The type of a DSS_value_t. */
#define DSS_VALUE_NIL 0     /* nil; a zeroed DSS_value_t is nil */
#define DSS_VALUE_BOOLEAN 1 /* u.boolean: 0 is false, anything else true */
#define DSS_VALUE_INTEGER 2 /* u.integer: an integer on Lua 5.3 and 5.4;
                               a number (a double) on 5.1, 5.2, LuaJIT */
#define DSS_VALUE_NUMBER 3  /* u.number: a float (math.type "float") */
#define DSS_VALUE_STRING 4  /* u.string: len bytes at ptr, zeros included;
                               ptr may be NULL when len is 0 */

/* One value of a message put from C: a tag and its payload. Strings are
 * copied before channel_put returns: the caller keeps its buffer. */
typedef struct DSS_value_s {
  int type; /* DSS_VALUE_... */
  union {
    int boolean;
    long long integer;
    double number;
    struct {
      const char *ptr;
      size_t len;
    } string;
  } u;
} DSS_value_t;

/* The most values one channel_put may send as one message. */
#define DSS_CHANNEL_MAX_VALUES 64

/*
 * Lua thread (L's), never raises: the channel handle at stack index idx
 * (a darksidesync.channel value; negative indexes count from the top)
 * becomes a reference for the C library: an opaque pointer it may keep
 * and use from any thread, after the handle is collected and after L is
 * closed, until it hands it to channel_release, once. Returns NULL with
 * *errcode = DSS_ERR_INVALID_ARGUMENT when the value at idx is not a
 * channel handle (or L is NULL); else *errcode = DSS_SUCCESS. errcode may
 * be NULL. Each call is one more reference (release each).
 */
typedef void *(*DSS_channel_retain_2v2_t)(struct lua_State *L, int idx,
                                          int *errcode);

/*
 * Any thread: drops a reference from channel_retain (NULL: nothing). The
 * channel itself lives on while Lua or another reference holds it; it is
 * not closed. A put blocked on this reference must have returned first.
 */
typedef void (*DSS_channel_release_2v2_t)(void *ch);

/*
 * Any thread, no Lua (not the Lua thread for a blocking put whose only
 * getter is that thread: it would wait forever). Puts values[0 .. n-1]
 * into the channel as ONE message: a get receives them as n values, in
 * order (ch:get() returns them all). 1 <= n <= DSS_CHANNEL_MAX_VALUES.
 * The values are copied (strings too) before anything else happens.
 * - flags: 0 or DSS_DELIVER_NOWAIT (never wait, as timeout_ms == 0).
 * - timeout_ms: how long to wait while the channel is full (a rendezvous:
 *   until a get takes the message), as deliver2's: DSS_TIMEOUT_INFINITE
 *   (< 0) or > DSS_TIMEOUT_MAX_MS: no limit; 0: never wait.
 * Returns DSS_SUCCESS (buffered, or taken by a get), or, nothing sent:
 * - DSS_ERR_QUEUE_FULL: full, and no wait was allowed;
 * - DSS_ERR_TIMEOUT: still full when timeout_ms passed;
 * - DSS_ERR_CLOSED: the channel is closed, or was closed while waiting;
 * - DSS_ERR_INVALID_ARGUMENT: ch or values NULL, n out of range, unknown
 *   flag bits, an unknown type, a NULL string with len > 0;
 * - DSS_ERR_OUT_OF_MEMORY.
 * ch must be a reference the caller holds (not released): it cannot be
 * checked beyond NULL.
 */
typedef int (*DSS_channel_put_2v2_t)(void *ch, const DSS_value_t *values,
                                     int n, unsigned int flags,
                                     long timeout_ms);

/*
 * Any thread: closes the channel (as ch:close() in Lua): no more puts;
 * gets take what is buffered, then "closed"; every put or get waiting on
 * it returns (a C put: DSS_ERR_CLOSED). The reference stays the caller's
 * to release. Returns DSS_SUCCESS, or DSS_ERR_INVALID_ARGUMENT for NULL.
 */
typedef int (*DSS_channel_close_2v2_t)(void *ch);

/* The 2v2 API (darksidesync 2.2): 2v1's members in the same order, then
 * the channel calls. Found under registry["DSS.DarkSideSync"]["DSS API
 * 2v2"]; an older darksidesync has no such key. */
typedef struct DSS_api_2v2_s *pDSS_api_2v2_t;
typedef struct DSS_api_2v2_s {
  const char *version; /* "DSS API 2v2" */
  DSS_register_1v0_t reg;
  DSS_getutilid_1v0_t getutilid;
  DSS_deliver_1v0_t deliver;
  DSS_unregister_1v0_t unreg;
  DSS_deliver_2v0_t deliver2;
  DSS_queued_2v0_t queued;
  DSS_regc_2v0_t regc;
  DSS_deliverc_2v0_t deliverc;
  DSS_channel_retain_2v2_t channel_retain;
  DSS_channel_release_2v2_t channel_release;
  DSS_channel_put_2v2_t channel_put;
  DSS_channel_close_2v2_t channel_close;
} DSS_api_2v2_t;

/* ------------------------------------------------------------------------
 * Codes. Warnings are greater than DSS_SUCCESS, errors smaller.
 * --------------------------------------------------------------------- */
#define DSS_SUCCESS -100
/* Warning: the item was queued; only the UDP notification failed. */
#define DSS_ERR_UDP_SEND_FAILED -99
/* The utilid is unknown, stale or unregistered. */
#define DSS_ERR_INVALID_UTILID -101
/* darksidesync is not running in that Lua state, or it is stopping. */
#define DSS_ERR_NOT_STARTED -102
#define DSS_ERR_NO_CANCEL_PROVIDED -103
#define DSS_ERR_OUT_OF_MEMORY -104
#define DSS_ERR_NO_DECODE_PROVIDED -105
#define DSS_ERR_NO_GLOBALS -106
/* The library is not registered with that Lua state. */
#define DSS_ERR_UNKNOWN_LIB -107
/* Already registered; the existing utilid is returned. */
#define DSS_ERR_ALREADY_REGISTERED -108
/* 2v0 (1v0 deliver can return DSS_ERR_WOULD_DEADLOCK too). */
/* deliver2: the timeout passed; see DSS_deliver_2v0_t for who ended what. */
#define DSS_ERR_TIMEOUT -109
/* deliver2 with DSS_DELIVER_NOWAIT: the queue is full; nothing queued. */
#define DSS_ERR_QUEUE_FULL -110
/* deliver2: the blocking item was cancelled instead of answered. */
#define DSS_ERR_CANCELLED -111
/* The call would wait on the thread running this state's poll/dispatch/wait
 * right now, or, with no time limit, on the thread that last ran them (the
 * Lua thread, between two drains: nothing could answer while it waits). */
#define DSS_ERR_WOULD_DEADLOCK -112
/* deliver2: unknown flag bits; 2v2 channel calls: see each. */
#define DSS_ERR_INVALID_ARGUMENT -113
/* 2v2 channel_put: the channel is closed; nothing sent. */
#define DSS_ERR_CLOSED -114

/*
 * Every code once: its name, its value and a short English description.
 * DSS_strerror and the C++ helper's dss::code_name are made from this list;
 * darksidesync checks at build time that it agrees with the #defines above
 * (which stay plain macros: client sources test them with #ifdef).
 */
#define DSS_CODE_LIST(X)                                                      \
  X(DSS_SUCCESS, -100, "success")                                             \
  X(DSS_ERR_UDP_SEND_FAILED, -99,                                             \
    "queued, but the UDP notification could not be sent")                    \
  X(DSS_ERR_INVALID_UTILID, -101,                                             \
    "invalid utilid (unknown, stale or unregistered)")                        \
  X(DSS_ERR_NOT_STARTED, -102,                                                \
    "darksidesync is not running in that Lua state (not loaded, or closing)") \
  X(DSS_ERR_NO_CANCEL_PROVIDED, -103, "no cancel callback given")             \
  X(DSS_ERR_OUT_OF_MEMORY, -104, "out of memory")                             \
  X(DSS_ERR_NO_DECODE_PROVIDED, -105, "no decoder given")                     \
  X(DSS_ERR_NO_GLOBALS, -106, "darksidesync's registry table is missing")     \
  X(DSS_ERR_UNKNOWN_LIB, -107, "library not registered with that Lua state")  \
  X(DSS_ERR_ALREADY_REGISTERED, -108,                                         \
    "library already registered (the existing utilid was returned)")          \
  X(DSS_ERR_TIMEOUT, -109, "timed out")                                       \
  X(DSS_ERR_QUEUE_FULL, -110, "queue full")                                   \
  X(DSS_ERR_CANCELLED, -111, "cancelled (unregistered, or the Lua state closed)") \
  X(DSS_ERR_WOULD_DEADLOCK, -112,                                             \
    "would deadlock: the call would wait on the thread that runs the Lua state") \
  X(DSS_ERR_INVALID_ARGUMENT, -113, "invalid argument")                     \
  X(DSS_ERR_CLOSED, -114, "channel closed")

/*
 * A short English description of a code above, for logs and error
 * messages: "success", "invalid utilid (unknown, stale or unregistered)",
 * ... Never NULL; an unknown code gives "unknown darksidesync code". Header
 * only: nothing to link.
 */
#if defined(__cplusplus) || (defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L)
#define DSS_INLINE static inline
#elif defined(__GNUC__)
#define DSS_INLINE static __inline__ __attribute__((unused))
#else
#define DSS_INLINE static
#endif
DSS_INLINE const char *DSS_strerror(int code) {
  switch (code) {
#define DSS_STRERROR_CASE(name, value, text) \
  case value:                                \
    return text;
    DSS_CODE_LIST(DSS_STRERROR_CASE)
#undef DSS_STRERROR_CASE
    default:
      return "unknown darksidesync code";
  }
}

/*
 * DSS_value_t makers, for an array of values in one expression:
 *   DSS_value_t v[3] = {DSS_vinteger(id), DSS_vlstring(buf, n), DSS_vnil()};
 * Header only.
 */
DSS_INLINE DSS_value_t DSS_vnil(void) {
  DSS_value_t v;
  v.type = DSS_VALUE_NIL;
  v.u.integer = 0;
  return v;
}
DSS_INLINE DSS_value_t DSS_vboolean(int b) {
  DSS_value_t v = DSS_vnil();
  v.type = DSS_VALUE_BOOLEAN;
  v.u.boolean = b;
  return v;
}
DSS_INLINE DSS_value_t DSS_vinteger(long long i) {
  DSS_value_t v = DSS_vnil();
  v.type = DSS_VALUE_INTEGER;
  v.u.integer = i;
  return v;
}
DSS_INLINE DSS_value_t DSS_vnumber(double x) {
  DSS_value_t v = DSS_vnil();
  v.type = DSS_VALUE_NUMBER;
  v.u.number = x;
  return v;
}
/* len bytes at p (zeros included). */
DSS_INLINE DSS_value_t DSS_vlstring(const char *p, size_t len) {
  DSS_value_t v;
  v.type = DSS_VALUE_STRING;
  v.u.string.ptr = p;
  v.u.string.len = len;
  return v;
}
/* A zero-terminated string (without its terminator). */
DSS_INLINE DSS_value_t DSS_vstring(const char *s) {
  size_t len = 0;
  if (s != NULL)
    while (s[len] != '\0') len++;
  return DSS_vlstring(s, len);
}

#ifdef __cplusplus
}
#endif

#endif /* darksidesync_api_h */
