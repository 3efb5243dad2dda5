// copy_names.cpp -- the registered metatables (per state) and handle types
// (process-wide) the copy routine looks up by name.
#include "copy_names.hpp"

#include <atomic>
#include <cstring>
#include <mutex>

namespace dss {

namespace {

// The registry key of a state's metatable table: this variable's address.
const char kMetatables = 0;

// Handle types: few, registered at module load, read by every copy
// without a lock. An entry is written once, before `count` is raised
// past it (release), and readers read `count` first (acquire).
constexpr int kMaxHandleTypes = 8;
CopyHandleType g_types[kMaxHandleTypes];
std::atomic<int> g_count{0};
std::mutex g_register;

}  // namespace

void copy_register_metatable(lua_State* L, int name_idx, int mt_idx) {
  // Both directions in one table: names are strings, metatables tables.
  name_idx = dss_absindex(L, name_idx);
  mt_idx = dss_absindex(L, mt_idx);
  luaL_checktype(L, mt_idx, LUA_TTABLE);
  luaL_checktype(L, name_idx, LUA_TSTRING);
  lua_pushvalue(L, name_idx);
  lua_pushvalue(L, mt_idx);
  copynames::push_metatables(L);                 // name mt reg|nil
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    dss_rawsetp(L, LUA_REGISTRYINDEX, &kMetatables);
  }
  lua_pushvalue(L, -3);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);                             // reg[name] = mt
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -4);
  lua_rawset(L, -3);                             // reg[mt] = name
  lua_pop(L, 3);
}

bool copy_register_handle(const CopyHandleType& type) {
  std::lock_guard<std::mutex> lock(g_register);
  int n = g_count.load(std::memory_order_relaxed);
  for (int i = 0; i < n; i++)
    if (std::strcmp(g_types[i].tname, type.tname) == 0) return true;
  if (n == kMaxHandleTypes) return false;
  g_types[n] = type;
  g_count.store(n + 1, std::memory_order_release);
  return true;
}

namespace copynames {

void push_metatables(lua_State* L) {
  dss_rawgetp(L, LUA_REGISTRYINDEX, &kMetatables);
}

int handle_tag(lua_State* L, int idx) {
  int n = g_count.load(std::memory_order_acquire);
  if (n == 0 || !lua_getmetatable(L, idx)) return -1;
  for (int i = 0; i < n; i++) {
    luaL_getmetatable(L, g_types[i].tname);
    bool same = lua_rawequal(L, -1, -2) != 0;
    lua_pop(L, 1);
    if (same) {
      lua_pop(L, 1);
      return i;
    }
  }
  lua_pop(L, 1);
  return -1;
}

const CopyHandleType* handle_type(std::uint32_t tag) {
  int n = g_count.load(std::memory_order_acquire);
  return tag < static_cast<std::uint32_t>(n) ? &g_types[tag] : nullptr;
}

}  // namespace copynames
}  // namespace dss
