// copy.hpp -- the one routine that copies Lua values from one state to
// another: into a Message (copy_out), out of it into the target state
// (copy_in). Used by channels, session spawn/join and the C-thread channel
// API (whose values, plain C ones, are encoded by copy_c). What copies and
// what is an error: docs/sessions.md.
//
// Neither function raises: each returns LUA_OK, or an error status with
// the error message on top of the stack, for the caller to raise once it
// has nothing left to clean up (a Message it owns: destroy it or keep it,
// then lua_error). Both run their Lua-side work under a protected call, so
// no Lua error crosses the caller's frames. Each needs 2 free stack slots
// on entry (a C function has LUA_MINSTACK).
#ifndef DSS_LUA_COPY_HPP
#define DSS_LUA_COPY_HPP

#include "compat.h"
#include "darksidesync_api.h"
#include "message.hpp"

namespace dss {

// Encodes the n values at stack indexes first .. first+n-1 (left in
// place) at the end of *out. On error, *out is as it was before the call
// (references added meanwhile released). Errors name the value and where
// in it: "darksidesync: cannot copy a userdata (value 2, at .a.b)".
int copy_out(lua_State* L, int first, int n, Message* out);

// Pushes the values encoded in m, and sets *nvalues to their count. On
// error pushes only the error message (and *nvalues is 0). m is not
// changed: its references stay owned by it (a handle pushed takes a
// reference of its own).
int copy_in(lua_State* L, const Message& m, int* nvalues);

// Encodes n values a C thread handed in (the 2v2 channel API; no Lua
// state, any thread) at the end of *out, as copy_out would have encoded
// the same Lua values: copy_in decodes them. INTEGER is an integer on 5.3+
// (a float on 5.1, 5.2 and LuaJIT), NUMBER a float, STRING the bytes.
// Returns DSS_SUCCESS; DSS_ERR_INVALID_ARGUMENT (n < 0, values NULL with
// n > 0, an unknown type, a NULL string with a length: nothing written);
// or DSS_ERR_OUT_OF_MEMORY (*out as it was). Never raises. (copy_c.cpp)
int copy_c(const DSS_value_t* values, int n, Message* out);

// Registers the metatable at mt_idx under the name at name_idx (a string)
// in L's copy registry: a table whose metatable is registered in the
// source state arrives with the metatable registered under the same name
// in the target, if any (else without one). Raises on a bad argument or
// out of memory: call it from a lua_CFunction.
void copy_register_metatable(lua_State* L, int name_idx, int mt_idx);

// A handle type: a full userdata whose metatable is luaL_getmetatable(L,
// tname) copies as a reference to the shared object behind it.
//   retain(L, idx): the object behind the userdata at idx, with one more
//     reference (may raise before it takes the reference; never after).
//   push(L, obj): pushes a new userdata for obj in the target, taking a
//     reference of its own (may raise).
//   release(obj): drops one reference; any thread, no Lua.
struct CopyHandleType {
  const char* tname;
  void* (*retain)(lua_State* L, int idx);
  void (*push)(lua_State* L, void* obj);
  void (*release)(void* obj);
};

// Registers a handle type, process-wide (at module load; thread-safe,
// idempotent for the same tname). tname must stay valid for the process's
// life. False when the table of handle types (8 entries) is full.
bool copy_register_handle(const CopyHandleType& type);

}  // namespace dss

#endif  // DSS_LUA_COPY_HPP
