// copy_names.hpp -- what the copy routine looks up by name: the state's
// registered metatables (per state, in its registry) and the handle types
// (process-wide). Internal to src/lua/copy_*.cpp.
#ifndef DSS_LUA_COPY_NAMES_HPP
#define DSS_LUA_COPY_NAMES_HPP

#include "copy.hpp"

namespace dss {
namespace copynames {

// Pushes L's metatable registry (name -> metatable, metatable -> name),
// or nil when nothing was registered. Never raises.
void push_metatables(lua_State* L);

// The handle type of the full userdata at idx: its index (a Message::Ref
// tag), or -1 when its metatable is no handle type's. May raise (a
// metatable lookup by name).
int handle_tag(lua_State* L, int idx);

// The handle type behind a tag (null for an unknown tag).
const CopyHandleType* handle_type(std::uint32_t tag);

}  // namespace copynames
}  // namespace dss

#endif  // DSS_LUA_COPY_NAMES_HPP
