// copy_c.cpp -- encoding the values a C thread hands to the 2v2 channel API
// (DSS_value_t: nil, booleans, integers, numbers, strings) into a Message,
// with no Lua state, in the format copy_out writes (copy_format.hpp): the
// receiving state decodes them with copy_in like any other message. The
// format is defined once, there; this file and copy_out.cpp are its only
// writers. Lua is needed only for lua_Integer and lua_Number, whose bytes
// the format holds.
#include "copy.hpp"
#include "copy_format.hpp"

#include <cstring>

namespace dss {

namespace {

namespace fmt = copyfmt;

// Whether v can be encoded: a known type, a string's bytes present.
bool valid(const DSS_value_t& v) {
  switch (v.type) {
    case DSS_VALUE_NIL:
    case DSS_VALUE_BOOLEAN:
    case DSS_VALUE_INTEGER:
    case DSS_VALUE_NUMBER: return true;
    case DSS_VALUE_STRING: return v.u.string.ptr != nullptr || v.u.string.len == 0;
    default: return false;
  }
}

// FLOAT and the number.
bool put_float(lua_Number x, Message* out) {
  unsigned char b[1 + sizeof x];
  b[0] = fmt::kFloat;
  std::memcpy(b + 1, &x, sizeof x);
  return out->append(b, sizeof b);
}

// An integer: INT on 5.3+ (a float where lua_Integer cannot hold it, as in
// a LUA_32BITS build); elsewhere Lua has only floats.
bool put_integer(long long i, Message* out) {
#if LUA_VERSION_NUM >= 503
  lua_Integer li = static_cast<lua_Integer>(i);
  if (static_cast<long long>(li) == i) {
    unsigned char b[1 + sizeof li];
    b[0] = fmt::kInt;
    std::memcpy(b + 1, &li, sizeof li);
    return out->append(b, sizeof b);
  }
#endif
  return put_float(static_cast<lua_Number>(i), out);
}

bool put_one(const DSS_value_t& v, Message* out) {
  unsigned char b[1 + 10];
  switch (v.type) {
    case DSS_VALUE_NIL: b[0] = fmt::kNil; return out->append(b, 1);
    case DSS_VALUE_BOOLEAN:
      b[0] = v.u.boolean ? fmt::kTrue : fmt::kFalse;
      return out->append(b, 1);
    case DSS_VALUE_INTEGER: return put_integer(v.u.integer, out);
    case DSS_VALUE_NUMBER: return put_float(static_cast<lua_Number>(v.u.number), out);
    default: {  // DSS_VALUE_STRING (checked by valid())
      b[0] = fmt::kStr;
      std::size_t hn = 1 + fmt::put_varint(b + 1, v.u.string.len);
      return out->append(b, hn) && out->append(v.u.string.ptr, v.u.string.len);
    }
  }
}

}  // namespace

int copy_c(const DSS_value_t* values, int n, Message* out) {
  if (n < 0 || (n > 0 && values == nullptr)) return DSS_ERR_INVALID_ARGUMENT;
  for (int i = 0; i < n; i++)
    if (!valid(values[i])) return DSS_ERR_INVALID_ARGUMENT;
  const std::size_t size0 = out->size(), refs0 = out->nrefs();
  for (int i = 0; i < n; i++) {
    if (!put_one(values[i], out)) {
      out->truncate(size0, refs0);
      return DSS_ERR_OUT_OF_MEMORY;
    }
  }
  return DSS_SUCCESS;
}

}  // namespace dss
