// session.hpp -- a session: a Lua state of its own, running a function
// among fibers on the thread pool of the state that spawned it (see
// docs/sessions.md). The Lua face is session.cpp's; this is what the rest
// of the binding needs.
#ifndef DSS_LUA_SESSION_HPP
#define DSS_LUA_SESSION_HPP

#include "compat.h"

// Leaves the table of session functions on the stack (darksidesync's
// "_session" field; lua/darksidesync/session.lua builds the module on it).
// May raise.
void dss_open_session(lua_State* L);

#endif  // DSS_LUA_SESSION_HPP
