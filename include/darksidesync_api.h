/*
 * darksidesync_api.h -- the DarkSideSync C ABI, "DSS API 1v0".
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
#define DSS_VERSION "2.1.0"
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
/* deliver2: unknown flag bits. */
#define DSS_ERR_INVALID_ARGUMENT -113

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
  X(DSS_ERR_INVALID_ARGUMENT, -113, "invalid argument")

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

#ifdef __cplusplus
}
#endif

#endif /* darksidesync_api_h */
