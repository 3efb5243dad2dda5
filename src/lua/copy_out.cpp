// copy_out.cpp -- encoding Lua values into a Message (copy_format.hpp).
//
// Values that are all nil, booleans, numbers and strings are encoded
// right away, unprotected: nothing there can raise. Anything else is
// encoded under a protected call (dss_pcallv), which keeps a table of what
// it has seen (for shared references and cycles) on the Lua stack. The
// Message is the caller's, passed by pointer: the traversal's frames own
// nothing with a destructor, so a Lua error may unwind them.
#include "copy.hpp"
#include "copy_format.hpp"
#include "copy_names.hpp"
#include "copy_path.hpp"

#include <cstdio>
#include <cstring>

namespace dss {

namespace {

using copypath::Node;
namespace fmt = copyfmt;

enum class Scalar { ok, no, nomem };

// Encodes the value at idx if it is a nil, boolean, number or string.
// Never raises (reading a string does not convert anything).
Scalar put_scalar(lua_State* L, int idx, Message* out) {
  unsigned char b[1 + 10];
  switch (lua_type(L, idx)) {
    case LUA_TNIL: b[0] = fmt::kNil; return out->append(b, 1) ? Scalar::ok : Scalar::nomem;
    case LUA_TBOOLEAN:
      b[0] = lua_toboolean(L, idx) ? fmt::kTrue : fmt::kFalse;
      return out->append(b, 1) ? Scalar::ok : Scalar::nomem;
    case LUA_TNUMBER:
      if (dss_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        b[0] = fmt::kInt;
        std::memcpy(b + 1, &i, sizeof i);
        return out->append(b, 1 + sizeof i) ? Scalar::ok : Scalar::nomem;
      } else {
        lua_Number x = lua_tonumber(L, idx);
        b[0] = fmt::kFloat;
        std::memcpy(b + 1, &x, sizeof x);
        return out->append(b, 1 + sizeof x) ? Scalar::ok : Scalar::nomem;
      }
    case LUA_TSTRING: {
      size_t len;
      const char* s = lua_tolstring(L, idx, &len);
      b[0] = fmt::kStr;
      size_t hn = 1 + fmt::put_varint(b + 1, len);
      return out->append(b, hn) && out->append(s, len) ? Scalar::ok : Scalar::nomem;
    }
    default: return Scalar::no;
  }
}

// The state of one protected encoding. Stack: 1 this, 2.. the values,
// then `seen` (value -> id) and `mts` (the metatable registry, or nil).
struct Enc {
  Message* out;
  int n;
  int seen = 0;
  int mts = 0;
  lua_Integer next_id = 0;
  int value = 0;  // 1-based: the value being encoded, for errors
  bool nomem = false;
};

[[noreturn]] void raise_nomem(lua_State* L, Enc* e) {
  e->nomem = true;
  lua_pushliteral(L, "not enough memory");  // interned at startup: no allocation
  lua_error(L);
  __builtin_unreachable();
}

void put(lua_State* L, Enc* e, const void* p, size_t n) {
  if (!e->out->append(p, n)) raise_nomem(L, e);
}

void put_op_varint(lua_State* L, Enc* e, fmt::Op op, std::uint64_t v) {
  unsigned char b[1 + 10];
  b[0] = op;
  put(L, e, b, 1 + fmt::put_varint(b + 1, v));
}

// A table, function or handle met before is written as a BACKREF (true);
// else it gets the next id (false), in the order the decoder assigns them.
bool put_seen(lua_State* L, Enc* e, int idx) {
  lua_pushvalue(L, idx);
  lua_rawget(L, e->seen);
  if (!lua_isnil(L, -1)) {
    lua_Integer id = lua_tointeger(L, -1);
    lua_pop(L, 1);
    put_op_varint(L, e, fmt::kBackref, static_cast<std::uint64_t>(id));
    return true;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++e->next_id);
  lua_rawset(L, e->seen);
  return false;
}

void put_value(lua_State* L, Enc* e, int idx, const Node* at, int depth);

// The registered name of the metatable of the table at idx, pushed, or
// nothing (false) when it has none or it is not registered.
bool push_mt_name(lua_State* L, Enc* e, int idx) {
  if (!lua_istable(L, e->mts) || !lua_getmetatable(L, idx)) return false;
  lua_rawget(L, e->mts);
  if (lua_type(L, -1) == LUA_TSTRING) return true;
  lua_pop(L, 1);
  return false;
}

// TABLE|TABLE_MT, narray, npairs (patched at the end), [name], the pairs.
void put_table(lua_State* L, Enc* e, int idx, const Node* at, int depth) {
  luaL_checkstack(L, 4, "darksidesync: copying a table");
  if (put_seen(L, e, idx)) return;
  if (depth > fmt::kMaxDepth) copypath::fail(L, e->value, at, "tables nested more than 200 deep");
  bool named = push_mt_name(L, e, idx);
  std::uint32_t head[2] = {static_cast<std::uint32_t>(dss_rawlen(L, idx)), 0};
  unsigned char op = named ? fmt::kTableMt : fmt::kTable;
  put(L, e, &op, 1);
  size_t npairs_at = e->out->size() + sizeof head[0];
  put(L, e, head, sizeof head);
  if (named) {
    if (put_scalar(L, -1, e->out) != Scalar::ok) raise_nomem(L, e);  // STR op + name
    lua_pop(L, 1);
  }
  std::uint32_t npairs = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int key = lua_gettop(L) - 1;
    Node in_key{at, key, true}, under{at, key, false};
    put_value(L, e, key, &in_key, depth + 1);
    put_value(L, e, key + 1, &under, depth + 1);
    lua_pop(L, 1);
    npairs++;
  }
  std::memcpy(e->out->data() + npairs_at, &npairs, sizeof npairs);
}

// The upvalues a function may have: none, or _ENV (5.2+: the globals).
void check_upvalues(lua_State* L, Enc* e, int idx, const Node* at) {
  for (int i = 1;; i++) {
    const char* name = lua_getupvalue(L, idx, i);
    if (name == nullptr) return;
    lua_pop(L, 1);
    if (dss_is_env_upvalue(name)) continue;
    char what[96];
    std::snprintf(what, sizeof what, "function with upvalue '%.40s'", *name ? name : "?");
    copypath::fail(L, e->value, at, what);
  }
}

int dump_writer(lua_State*, const void* p, size_t sz, void* ud) {
  return static_cast<Message*>(ud)->append(p, sz) ? 0 : 1;
}

// FUNC, u64 length (patched), the lua_dump bytes.
void put_function(lua_State* L, Enc* e, int idx, const Node* at) {
  if (lua_iscfunction(L, idx)) copypath::fail(L, e->value, at, "a C function");
  check_upvalues(L, e, idx, at);
  if (put_seen(L, e, idx)) return;
  unsigned char op = fmt::kFunc;
  std::uint64_t len = 0;
  put(L, e, &op, 1);
  size_t len_at = e->out->size();
  put(L, e, &len, sizeof len);
  lua_pushvalue(L, idx);
  int status = dss_dump(L, dump_writer, e->out);
  lua_pop(L, 1);
  if (status != 0) raise_nomem(L, e);  // a Lua function dumps unless memory runs out
  len = e->out->size() - len_at - sizeof len;
  std::memcpy(e->out->data() + len_at, &len, sizeof len);
}

// HANDLE and the index of the reference taken (owned by the message).
void put_userdata(lua_State* L, Enc* e, int idx, const Node* at) {
  int tag = copynames::handle_tag(L, idx);
  if (tag < 0) copypath::fail(L, e->value, at, "a userdata");
  if (put_seen(L, e, idx)) return;
  const CopyHandleType* type = copynames::handle_type(static_cast<std::uint32_t>(tag));
  size_t ref = e->out->nrefs();
  void* obj = type->retain(L, idx);
  if (!e->out->add_ref({obj, type->release, static_cast<std::uint32_t>(tag)})) {
    type->release(obj);
    raise_nomem(L, e);
  }
  put_op_varint(L, e, fmt::kHandle, ref);
}

void put_value(lua_State* L, Enc* e, int idx, const Node* at, int depth) {
  Scalar s = put_scalar(L, idx, e->out);
  if (s == Scalar::ok) return;
  if (s == Scalar::nomem) raise_nomem(L, e);
  switch (lua_type(L, idx)) {
    case LUA_TTABLE: return put_table(L, e, idx, at, depth);
    case LUA_TFUNCTION: return put_function(L, e, idx, at);
    case LUA_TUSERDATA: return put_userdata(L, e, idx, at);
    case LUA_TLIGHTUSERDATA: return copypath::fail(L, e->value, at, "a light userdata");
    default: {
      char what[48];
      std::snprintf(what, sizeof what, "a %s", lua_typename(L, lua_type(L, idx)));
      copypath::fail(L, e->value, at, what);
    }
  }
}

// The protected part: stack 1 = the Enc, 2 .. n+1 = the values.
int encode_all(lua_State* L) {
  Enc* e = static_cast<Enc*>(lua_touserdata(L, 1));
  lua_newtable(L);
  e->seen = lua_gettop(L);
  copynames::push_metatables(L);
  e->mts = lua_gettop(L);
  for (e->value = 1; e->value <= e->n; e->value++) put_value(L, e, 1 + e->value, nullptr, 1);
  return 0;
}

// All n values encoded unprotected when they are all scalars (ok).
Scalar put_scalars(lua_State* L, int first, int n, Message* out) {
  for (int i = 0; i < n; i++) {
    Scalar s = put_scalar(L, first + i, out);
    if (s != Scalar::ok) return s;
  }
  return Scalar::ok;
}

}  // namespace

int copy_out(lua_State* L, int first, int n, Message* out) {
  first = dss_absindex(L, first);
  const size_t size0 = out->size(), refs0 = out->nrefs();
  Scalar s = put_scalars(L, first, n, out);
  if (s == Scalar::ok) return LUA_OK;
  out->truncate(size0, refs0);
  if (s == Scalar::nomem) {
    lua_pushliteral(L, "not enough memory");  // interned at startup: no allocation
    return LUA_ERRMEM;
  }
  Enc e;
  e.out = out;
  e.n = n;
  int status = dss_pcallv(L, encode_all, &e, first, n, 0);
  if (status != LUA_OK) {
    out->truncate(size0, refs0);
    if (e.nomem) status = LUA_ERRMEM;
  }
  return status;
}

}  // namespace dss
