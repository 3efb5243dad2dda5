// copy_path.hpp -- where in a value the encoder is, and the error it
// raises there. Internal to src/lua/copy_*.cpp.
//
// The path is a chain of nodes on the C stack, one per table level, built
// as the encoder descends and read only when it fails: a copy that
// succeeds never formats anything. Its text (docs/sessions.md):
//   .name       under a string key that is an identifier (24 bytes at most)
//   ["a b"]     under another string key (quoted, cut after 24 bytes)
//   [3] [1.5] [true]   under a number or boolean key
//   [table]     under a key of another type (its type name)
//   [key]       in the key itself (of the entry being copied)
// More than 8 levels print as the first 4, " ... ", the last 4.
#ifndef DSS_LUA_COPY_PATH_HPP
#define DSS_LUA_COPY_PATH_HPP

#include "compat.h"

namespace dss {
namespace copypath {

struct Node {
  const Node* up;  // the enclosing level; null at the top
  int key;         // absolute stack index of the entry's key
  bool in_key;     // inside the key itself, not its value
};

// Raises "darksidesync: cannot copy <what> (value <value>[, at <path>])".
// what is printed as given ("a userdata", "function with upvalue 'x'").
[[noreturn]] void fail(lua_State* L, int value, const Node* at, const char* what);

}  // namespace copypath
}  // namespace dss

#endif  // DSS_LUA_COPY_PATH_HPP
