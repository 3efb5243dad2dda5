// copy_in.cpp -- decoding a Message into the target state (copy_format.hpp).
//
// One nil, boolean or number is pushed right away, unprotected: nothing
// there can raise. Anything else is decoded under a protected call
// (dss_pcallv) that returns the values; what it decoded by id (tables,
// functions, handles: shared references and cycles) sits in a table on
// its stack, made only when the message has such a value.
#include "copy.hpp"
#include "copy_format.hpp"
#include "copy_names.hpp"

namespace dss {

namespace {

namespace fmt = copyfmt;

// The state of one protected decoding. Stack: 1 this, 2 the ids table
// (nil until the first table, function or handle), then the values.
struct Dec {
  const Message* m;
  fmt::Reader r;
  lua_Integer next_id = 0;
};

constexpr int kIds = 2;

[[noreturn]] void malformed(lua_State* L) {
  luaL_error(L, "darksidesync: malformed message");
  __builtin_unreachable();
}

// ids[next] = the value on top (left there).
void remember(lua_State* L, Dec* d) {
  if (lua_isnil(L, kIds)) {
    lua_newtable(L);
    lua_replace(L, kIds);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, kIds, static_cast<int>(++d->next_id));
}

void get_value(lua_State* L, Dec* d, int depth);

// Sets the metatable registered here under the name on top (popped), if
// there is one.
void set_named_mt(lua_State* L, int table) {
  copynames::push_metatables(L);                 // name reg|nil
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);                           // name reg mt|?
    if (lua_istable(L, -1)) lua_setmetatable(L, table);
    else lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

void get_table(lua_State* L, Dec* d, bool named, int depth) {
  if (depth > fmt::kMaxDepth + 1) malformed(L);
  luaL_checkstack(L, 4, "darksidesync: copying a table");
  std::uint32_t narray = d->r.raw<std::uint32_t>(), npairs = d->r.raw<std::uint32_t>();
  if (named) get_value(L, d, depth);             // the metatable's name
  lua_createtable(L, static_cast<int>(narray), npairs > narray ? static_cast<int>(npairs - narray) : 0);
  remember(L, d);
  int t = lua_gettop(L);
  for (std::uint32_t i = 0; i < npairs && d->r.ok(); i++) {
    get_value(L, d, depth + 1);
    get_value(L, d, depth + 1);
    if (lua_isnil(L, -2)) malformed(L);
    lua_rawset(L, t);
  }
  if (named) {
    lua_pushvalue(L, t - 1);
    set_named_mt(L, t);
    lua_remove(L, t - 1);
  }
}

void get_function(lua_State* L, Dec* d) {
  std::uint64_t len = d->r.raw<std::uint64_t>();
  const char* code = d->r.bytes(static_cast<size_t>(len));
  if (code == nullptr) malformed(L);
  if (dss_loadbinary(L, code, static_cast<size_t>(len), "=(copied function)") != LUA_OK) {
    if (lua_type(L, -1) != LUA_TSTRING) lua_error(L);  // a memory error as it is
    luaL_error(L, "darksidesync: cannot load a copied function: %s", lua_tostring(L, -1));
  }
  remember(L, d);  // loading set its _ENV, if any, to this state's globals
}

void get_handle(lua_State* L, Dec* d) {
  std::uint64_t i = d->r.varint();
  if (i >= d->m->nrefs()) malformed(L);
  const Message::Ref& ref = d->m->ref(static_cast<size_t>(i));
  const CopyHandleType* type = copynames::handle_type(ref.tag);
  if (type == nullptr) malformed(L);
  type->push(L, ref.obj);  // takes a reference of its own
  remember(L, d);
}

void get_value(lua_State* L, Dec* d, int depth) {
  size_t len;
  switch (d->r.op()) {
    case fmt::kNil: return lua_pushnil(L);
    case fmt::kFalse: return lua_pushboolean(L, 0);
    case fmt::kTrue: return lua_pushboolean(L, 1);
    case fmt::kInt: return lua_pushinteger(L, d->r.raw<lua_Integer>());
    case fmt::kFloat: return lua_pushnumber(L, d->r.raw<lua_Number>());
    case fmt::kStr: {
      len = static_cast<size_t>(d->r.varint());
      const char* s = d->r.bytes(len);
      if (s == nullptr) malformed(L);
      lua_pushlstring(L, s, len);
      return;
    }
    case fmt::kTable: return get_table(L, d, false, depth);
    case fmt::kTableMt: return get_table(L, d, true, depth);
    case fmt::kFunc: return get_function(L, d);
    case fmt::kHandle: return get_handle(L, d);
    case fmt::kBackref:
      if (lua_isnil(L, kIds)) malformed(L);
      lua_rawgeti(L, kIds, static_cast<int>(d->r.varint()));
      if (lua_isnil(L, -1)) malformed(L);
      return;
    default: malformed(L);
  }
}

// The protected part: stack 1 = the Dec. Returns the values.
int decode_all(lua_State* L) {
  Dec* d = static_cast<Dec*>(lua_touserdata(L, 1));
  lua_pushnil(L);  // kIds
  int n = 0;
  while (!d->r.done()) {
    luaL_checkstack(L, 4, "darksidesync: too many values to copy");
    get_value(L, d, 1);
    n++;
  }
  if (!d->r.ok()) malformed(L);
  return n;
}

// One nil, boolean or number, pushed unprotected (true); else false.
bool push_simple(lua_State* L, const Message& m) {
  fmt::Reader r(m.data(), m.size());
  unsigned char op = r.op();
  size_t need = op == fmt::kInt ? sizeof(lua_Integer) : op == fmt::kFloat ? sizeof(lua_Number) : 0;
  if (m.size() != 1 + need) return false;
  switch (op) {
    case fmt::kNil: lua_pushnil(L); return true;
    case fmt::kFalse: lua_pushboolean(L, 0); return true;
    case fmt::kTrue: lua_pushboolean(L, 1); return true;
    case fmt::kInt: lua_pushinteger(L, r.raw<lua_Integer>()); return true;
    case fmt::kFloat: lua_pushnumber(L, r.raw<lua_Number>()); return true;
    default: return false;
  }
}

}  // namespace

int copy_in(lua_State* L, const Message& m, int* nvalues) {
  *nvalues = 0;
  if (m.size() == 0) return LUA_OK;
  if (push_simple(L, m)) {
    *nvalues = 1;
    return LUA_OK;
  }
  Dec d{&m, fmt::Reader(m.data(), m.size())};
  int top = lua_gettop(L);
  int status = dss_pcallv(L, decode_all, &d, 0, 0, LUA_MULTRET);
  if (status == LUA_OK) *nvalues = lua_gettop(L) - top;
  return status;
}

}  // namespace dss
