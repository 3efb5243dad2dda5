/*
 * darksidesync_aux.h -- a small helper for client libraries of DarkSideSync.
 *
 * Compile darksidesync_aux.c into your library (as its own file, or by
 * #including it into one of yours). It needs Lua's headers, nothing else, and
 * never links against darksidesync. Same names and signatures as 1.0's helper.
 *
 *   static int my_luaopen(lua_State *L) {
 *     DSS_initialize(L, my_cancel);     -- raises a Lua error on failure
 *     ...
 *   }
 *   -- any thread:   rc = DSS_deliver(utilid, my_decode, my_return, data);
 *   -- my_cancel:    DSS_shutdown(NULL, utilid);
 *
 * Unlike 1.0's helper, the API pointer and the library id live in
 * darksidesync_aux.c, once per library, so a client split over several files
 * works.
 */
#ifndef darksidesync_aux_h
#define darksidesync_aux_h

#include "darksidesync_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(_WIN32)
#define DSS_AUX_API __attribute__((visibility("hidden")))
#else
#define DSS_AUX_API
#endif

/*
 * Looks the 1v0 API up in L's registry and registers this library with L.
 * Raises a Lua error with a clear message when darksidesync was not
 * required first, does not offer API 1v0, or registration fails.
 * Registering again with the same state is not an error.
 */
DSS_AUX_API void DSS_initialize(struct lua_State *L, DSS_cancel_1v0_t pCancel);

/* This library's utilid in L; raises a Lua error when there is none. */
DSS_AUX_API void *DSS_getutilid(struct lua_State *L);

/*
 * Delivers an item (see DSS_deliver_1v0_t). Any thread. Returns
 * DSS_ERR_NOT_STARTED when DSS_initialize never succeeded.
 */
DSS_AUX_API int DSS_deliver(void *utilid, DSS_decoder_1v0_t pDecode,
                            DSS_return_1v0_t pReturn, void *pData);

/*
 * Unregisters this library: from L (looking its utilid up) when L is not
 * NULL, else the given utilid (as from a cancel callback). Never raises.
 */
DSS_AUX_API void DSS_shutdown(struct lua_State *L, void *utilid);

/*
 * As DSS_initialize, registering with a context and a name (API 2v1, regc):
 * every callback of this library then gets the context as its last
 * argument, and darksidesync's error messages about its callbacks name it.
 * Deliver with DSS_deliverc. Raises when the loaded darksidesync is older
 * than 2.1 (no "DSS API 2v1").
 */
DSS_AUX_API void DSS_initializec(struct lua_State *L, DSS_cancel_2v0_t pCancel,
                                 void *context, const char *name);

/*
 * The 2v0 calls (see darksidesync_api.h): deliver with flags
 * (DSS_DELIVER_NOWAIT) and a timeout in ms (DSS_TIMEOUT_INFINITE), the
 * context-taking deliver for a DSS_initializec library, and the number of
 * this library's items queued. Any thread. DSS_ERR_NOT_STARTED before a
 * successful DSS_initialize/DSS_initializec, or when the loaded
 * darksidesync is older than 2.1.
 */
DSS_AUX_API int DSS_deliver2(void *utilid, DSS_decoder_1v0_t pDecode,
                             DSS_return_1v0_t pReturn, void *pData,
                             unsigned int flags, long timeout_ms);
DSS_AUX_API int DSS_deliverc(void *utilid, DSS_decoder_2v0_t pDecode,
                             DSS_return_2v0_t pReturn, void *pData,
                             unsigned int flags, long timeout_ms);
DSS_AUX_API long DSS_queued(void *utilid);

/*
 * Channels fed from C threads (API 2v2, darksidesync 2.2; see
 * darksidesync_api.h). A channel is not tied to a registration: these need
 * no DSS_initialize.
 *
 * DSS_channel_retain: on the Lua thread, the channel handle at stack index
 * idx as a reference any thread may keep (until DSS_channel_release).
 * Raises a Lua error -- "bad argument #idx (darksidesync.channel expected,
 * got <type>)" -- when the value is not a channel handle, and when the
 * loaded darksidesync is older than 2.2.
 *
 *   void *ch = DSS_channel_retain(L, 1);
 *   -- any thread:
 *   DSS_value_t v[2] = {DSS_vstring("temp"), DSS_vnumber(21.5)};
 *   rc = DSS_channel_put(ch, v, 2, 0, DSS_TIMEOUT_INFINITE);
 *   DSS_channel_release(ch);
 *
 * DSS_channel_put, DSS_channel_close and DSS_channel_release are 2v2's
 * channel_put, channel_close and channel_release (any thread); put and
 * close return DSS_ERR_NOT_STARTED when no DSS_channel_retain or
 * DSS_getapi2v2 ever found API 2v2 (then there is no channel to use).
 */
DSS_AUX_API void *DSS_channel_retain(struct lua_State *L, int idx);
DSS_AUX_API int DSS_channel_put(void *ch, const DSS_value_t *values, int n,
                                unsigned int flags, long timeout_ms);
DSS_AUX_API int DSS_channel_close(void *ch);
DSS_AUX_API void DSS_channel_release(void *ch);

/* The 2v2 API struct of L's darksidesync, or NULL when there is none
 * (darksidesync not required, or older than 2.2). Lua thread. */
DSS_AUX_API pDSS_api_2v2_t DSS_getapi2v2(struct lua_State *L);

/* The API struct found by DSS_initialize, or NULL before it. */
DSS_AUX_API pDSS_api_1v0_t DSS_getapi(void);

/* The id this library registers under (unique per library). */
DSS_AUX_API void *DSS_getlibid(void);

/* 1.0's helper exposed these two names; keep client sources building. */
#define DSSapi (DSS_getapi())
#define DSS_LibID (DSS_getlibid())

#ifdef __cplusplus
}
#endif

#endif /* darksidesync_aux_h */
