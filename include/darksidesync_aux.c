/*
 * darksidesync_aux.c -- the client helper; see darksidesync_aux.h.
 * Compile it into the client library, or #include it into one of its files.
 */
#ifdef __cplusplus
extern "C" {
#endif
#include <lua.h>
#include <lauxlib.h>
#ifdef __cplusplus
}
#endif
#include "darksidesync_aux.h"

/* Our library id: the address of a static of this library. */
static char dss_aux_libid_anchor;

/*
 * The API struct lives in the darksidesync module, which keeps itself loaded
 * for the life of the process once required, so the pointer stays valid.
 * It is written on a Lua thread and read by producer threads: use atomics
 * where the compiler has them.
 */
static pDSS_api_1v0_t dss_aux_api = NULL;

/* The 2v1 struct (2v0's calls and the client-context ones), when the
 * loaded darksidesync offers it; its first members are 1v0's. */
static pDSS_api_2v1_t dss_aux_api2 = NULL;

/* The 2v2 struct (channels), once a lookup found it. */
static pDSS_api_2v2_t dss_aux_api22 = NULL;

#if defined(__GNUC__)
#define DSS_AUX_LOAD22() __atomic_load_n(&dss_aux_api22, __ATOMIC_ACQUIRE)
#define DSS_AUX_STORE22(p) __atomic_store_n(&dss_aux_api22, (p), __ATOMIC_RELEASE)
#define DSS_AUX_LOAD() __atomic_load_n(&dss_aux_api, __ATOMIC_ACQUIRE)
#define DSS_AUX_STORE(p) __atomic_store_n(&dss_aux_api, (p), __ATOMIC_RELEASE)
#define DSS_AUX_LOAD2() __atomic_load_n(&dss_aux_api2, __ATOMIC_ACQUIRE)
#define DSS_AUX_STORE2(p) __atomic_store_n(&dss_aux_api2, (p), __ATOMIC_RELEASE)
#else
#define DSS_AUX_LOAD22() (dss_aux_api22)
#define DSS_AUX_STORE22(p) (dss_aux_api22 = (p))
#define DSS_AUX_LOAD() (dss_aux_api)
#define DSS_AUX_STORE(p) (dss_aux_api = (p))
#define DSS_AUX_LOAD2() (dss_aux_api2)
#define DSS_AUX_STORE2(p) (dss_aux_api2 = (p))
#endif

pDSS_api_1v0_t DSS_getapi(void) { return DSS_AUX_LOAD(); }

void *DSS_getlibid(void) { return &dss_aux_libid_anchor; }

/* registry[DSS_REGISTRY_NAME][DSS_API_2v1_KEY]'s struct, or NULL. */
static pDSS_api_2v1_t dss_aux_lookup2(lua_State *L) {
  pDSS_api_2v1_t api = NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v1_KEY);
    if (lua_islightuserdata(L, -1)) api = (pDSS_api_2v1_t)lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return api;
}

/* Raises the error for a failed registration (err: its code). */
static void dss_aux_regerror(lua_State *L, int err) {
  switch (err) {
    case DSS_ERR_NOT_STARTED:
      luaL_error(L, "darksidesync is not running in this Lua state");
      return;
    case DSS_ERR_NO_CANCEL_PROVIDED:
      luaL_error(L, "registering with darksidesync needs a cancel callback");
      return;
    case DSS_ERR_OUT_OF_MEMORY:
      luaL_error(L, "out of memory registering with darksidesync");
      return;
    default:
      luaL_error(L, "registering with darksidesync failed: %s (code %d)",
                 DSS_strerror(err), err);
      return;
  }
}

/* Pushes registry[DSS_REGISTRY_NAME][DSS_API_1v0_KEY]'s struct, or raises. */
static pDSS_api_1v0_t dss_aux_lookup(lua_State *L) {
  pDSS_api_1v0_t api;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME); /* dss table */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    luaL_error(L, "DarkSideSync API not found: require 'darksidesync' "
                  "before loading this library");
    return NULL;
  }
  lua_getfield(L, -1, DSS_API_1v0_KEY); /* dss table, api */
  if (!lua_islightuserdata(L, -1)) {
    lua_getfield(L, -2, DSS_VERSION_KEY); /* dss table, api, version */
    luaL_error(L, "the loaded darksidesync (version '%s') does not offer '%s'",
               lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown",
               DSS_API_1v0_KEY);
    return NULL;
  }
  api = (pDSS_api_1v0_t)lua_touserdata(L, -1);
  lua_pop(L, 2);
  return api;
}

void DSS_initialize(lua_State *L, DSS_cancel_1v0_t pCancel) {
  int err = DSS_SUCCESS;
  pDSS_api_1v0_t api = dss_aux_lookup(L);
  api->reg(L, &dss_aux_libid_anchor, pCancel, &err);
  if (err != DSS_SUCCESS && err != DSS_ERR_ALREADY_REGISTERED) {
    dss_aux_regerror(L, err);
    return;
  }
  DSS_AUX_STORE2(dss_aux_lookup2(L));
  DSS_AUX_STORE(api);
}

void DSS_initializec(lua_State *L, DSS_cancel_2v0_t pCancel, void *context,
                     const char *name) {
  int err = DSS_SUCCESS;
  pDSS_api_1v0_t api = dss_aux_lookup(L); /* raises without darksidesync */
  pDSS_api_2v1_t api2 = dss_aux_lookup2(L);
  if (api2 == NULL) {
    luaL_error(L, "the loaded darksidesync does not offer '%s' (client "
                  "context needs darksidesync 2.1 or later)", DSS_API_2v1_KEY);
    return;
  }
  api2->regc(L, &dss_aux_libid_anchor, pCancel, context, name, &err);
  if (err != DSS_SUCCESS && err != DSS_ERR_ALREADY_REGISTERED) {
    dss_aux_regerror(L, err);
    return;
  }
  DSS_AUX_STORE2(api2);
  DSS_AUX_STORE(api);
}

void *DSS_getutilid(lua_State *L) {
  int err = DSS_SUCCESS;
  void *utilid;
  pDSS_api_1v0_t api = DSS_AUX_LOAD();
  if (api == NULL) {
    luaL_error(L, "darksidesync helper not initialized (call DSS_initialize)");
    return NULL;
  }
  utilid = api->getutilid(L, &dss_aux_libid_anchor, &err);
  if (utilid == NULL) {
    luaL_error(L, err == DSS_ERR_NOT_STARTED
                      ? "darksidesync is not running in this Lua state"
                      : "this library is not registered with darksidesync in "
                        "this Lua state");
  }
  return utilid;
}

int DSS_deliver(void *utilid, DSS_decoder_1v0_t pDecode,
                DSS_return_1v0_t pReturn, void *pData) {
  pDSS_api_1v0_t api = DSS_AUX_LOAD();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->deliver(utilid, pDecode, pReturn, pData);
}

void DSS_shutdown(lua_State *L, void *utilid) {
  pDSS_api_1v0_t api = DSS_AUX_LOAD();
  if (api == NULL) return;
  if (L != NULL) utilid = api->getutilid(L, &dss_aux_libid_anchor, NULL);
  if (utilid != NULL) api->unreg(utilid);
}

int DSS_deliver2(void *utilid, DSS_decoder_1v0_t pDecode,
                 DSS_return_1v0_t pReturn, void *pData, unsigned int flags,
                 long timeout_ms) {
  pDSS_api_2v1_t api = DSS_AUX_LOAD2();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->deliver2(utilid, pDecode, pReturn, pData, flags, timeout_ms);
}

int DSS_deliverc(void *utilid, DSS_decoder_2v0_t pDecode,
                 DSS_return_2v0_t pReturn, void *pData, unsigned int flags,
                 long timeout_ms) {
  pDSS_api_2v1_t api = DSS_AUX_LOAD2();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->deliverc(utilid, pDecode, pReturn, pData, flags, timeout_ms);
}

long DSS_queued(void *utilid) {
  pDSS_api_2v1_t api = DSS_AUX_LOAD2();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->queued(utilid);
}

pDSS_api_2v2_t DSS_getapi2v2(lua_State *L) {
  pDSS_api_2v2_t api = NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v2_KEY);
    if (lua_islightuserdata(L, -1)) api = (pDSS_api_2v2_t)lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (api != NULL) DSS_AUX_STORE22(api);
  return api;
}

void *DSS_channel_retain(lua_State *L, int idx) {
  void *ch;
  pDSS_api_2v2_t api = DSS_getapi2v2(L);
  if (api == NULL) {
    luaL_error(L, "the loaded darksidesync does not offer '%s' (channels "
                  "from C need darksidesync 2.2 or later; require "
                  "'darksidesync' first)", DSS_API_2v2_KEY);
    return NULL;
  }
  ch = api->channel_retain(L, idx, NULL);
  if (ch == NULL) {
    luaL_argerror(L, idx,
                  lua_pushfstring(L, "darksidesync.channel expected, got %s",
                                  luaL_typename(L, idx)));
  }
  return ch;
}

int DSS_channel_put(void *ch, const DSS_value_t *values, int n,
                    unsigned int flags, long timeout_ms) {
  pDSS_api_2v2_t api = DSS_AUX_LOAD22();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->channel_put(ch, values, n, flags, timeout_ms);
}

int DSS_channel_close(void *ch) {
  pDSS_api_2v2_t api = DSS_AUX_LOAD22();
  if (api == NULL) return DSS_ERR_NOT_STARTED;
  return api->channel_close(ch);
}

void DSS_channel_release(void *ch) {
  pDSS_api_2v2_t api = DSS_AUX_LOAD22();
  if (api != NULL) api->channel_release(ch);
}
