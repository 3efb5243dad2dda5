// channel_api.cpp -- the channel calls of the 2v2 C ABI
// (darksidesync_api.h, "DSS API 2v2"; docs/c-api.md): a C library takes a
// reference to a Lua channel on the Lua thread, then puts plain values
// into it from its own threads, with no Lua state. The values are encoded
// by copy_c (the copy format's scalars), so any Lua state's get decodes
// them as it decodes a Lua put's; a put that must wait sleeps on the
// calling thread (core/thread_put.hpp).
//
// The reference is the library's: a Channel* with one count of its own.
// Nothing can tell a stale or foreign pointer from a live one, so only
// NULL is refused; the rest is the library's contract (docs/c-api.md).
#include "binding.hpp"
#include "channel.hpp"
#include "copy.hpp"
#include "thread_put.hpp"

using dss::Channel;
using dss::Message;
using dss::ThreadPut;

extern "C" {

void* dss_api_channel_retain(lua_State* L, int idx, int* err) {
  Channel* ch = nullptr;
  if (L != nullptr) {
    int top = lua_gettop(L);
    // A stack index must name a value; pseudo-indexes are the caller's.
    bool valid = idx > LUA_REGISTRYINDEX && idx != 0 && (idx > 0 ? idx <= top : -idx <= top);
    if (valid || idx <= LUA_REGISTRYINDEX) ch = dss_channel_of(L, idx);
  }
  if (ch) ch->ref();
  if (err) *err = ch ? DSS_SUCCESS : DSS_ERR_INVALID_ARGUMENT;
  return ch;
}

void dss_api_channel_release(void* ch) {
  if (ch) static_cast<Channel*>(ch)->unref();
}

int dss_api_channel_put(void* ch, const DSS_value_t* values, int n, unsigned flags,
                        long timeout_ms) {
  if (!ch || !values || n < 1 || n > DSS_CHANNEL_MAX_VALUES || (flags & ~DSS_DELIVER_NOWAIT))
    return DSS_ERR_INVALID_ARGUMENT;
  Message m;
  int rc = dss::copy_c(values, n, &m);
  if (rc != DSS_SUCCESS) return rc;
  long long t = (flags & DSS_DELIVER_NOWAIT) ? 0 : timeout_ms;
  switch (dss::put_from_thread(static_cast<Channel*>(ch), m, t)) {
    case ThreadPut::done: return DSS_SUCCESS;
    case ThreadPut::closed: return DSS_ERR_CLOSED;
    case ThreadPut::full: return DSS_ERR_QUEUE_FULL;
    case ThreadPut::timeout: return DSS_ERR_TIMEOUT;
    default: return DSS_ERR_OUT_OF_MEMORY;
  }
}

int dss_api_channel_close(void* ch) {
  if (!ch) return DSS_ERR_INVALID_ARGUMENT;
  static_cast<Channel*>(ch)->close();
  return DSS_SUCCESS;
}

}  // extern "C"
