// binding.hpp -- what one file of the binding (src/lua/) offers another:
// nothing here is public.
#ifndef DSS_LUA_BINDING_HPP
#define DSS_LUA_BINDING_HPP

#include "compat.h"
#include "darksidesync_api.h"

namespace dss {
class Hub;
class Channel;
}  // namespace dss

// The hub of L's state (darksidesync loaded, not stopped), or nullptr.
// Never raises. (module.cpp)
dss::Hub* dss_hub_of(lua_State* L);

// Pushes a new channel handle of ch, taking a reference of its own. May
// raise (before the reference is taken). (channel.cpp)
void dss_push_channel(lua_State* L, dss::Channel* ch);

// The core channel of the channel handle at idx, or nullptr when the value
// there is not one (or was collected). The handle keeps its reference.
// Never raises (idx must be valid). (channel.cpp)
dss::Channel* dss_channel_of(lua_State* L, int idx);

// The channel calls of the 2v2 C ABI (darksidesync_api.h, whose comments
// are their contracts), for module.cpp's API struct. (channel_api.cpp)
extern "C" {
void* dss_api_channel_retain(lua_State* L, int idx, int* err);
void dss_api_channel_release(void* ch);
int dss_api_channel_put(void* ch, const DSS_value_t* values, int n, unsigned flags,
                        long timeout_ms);
int dss_api_channel_close(void* ch);
}

#endif  // DSS_LUA_BINDING_HPP
