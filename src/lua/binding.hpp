// binding.hpp -- what one file of the binding (src/lua/) offers another:
// nothing here is public.
#ifndef DSS_LUA_BINDING_HPP
#define DSS_LUA_BINDING_HPP

#include "compat.h"

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

// The core channel of the handle at idx, or nullptr when it is not one.
// The handle keeps its reference. Never raises. (channel.cpp)
dss::Channel* dss_channel_of(lua_State* L, int idx);

#endif  // DSS_LUA_BINDING_HPP
