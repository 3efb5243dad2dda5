// test_copy_c.cpp -- the encoder of the values a C thread puts into a
// channel (copy_c, src/lua/copy_c.cpp; the 2v2 channel_put): what it writes
// decodes with copy_in to exactly those values, and is byte for byte what
// copy_out writes for the same Lua values (one format, no drift). Built
// against whichever Lua the build selects, as test_copy.cpp.
#include <catch2/catch.hpp>

#include "copy.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

struct Lua {
  lua_State* L;
  Lua() : L(luaL_newstate()) { luaL_openlibs(L); }
  ~Lua() { lua_close(L); }
  Lua(const Lua&) = delete;
  Lua& operator=(const Lua&) = delete;

  // Decodes m into the global table V (V.n values).
  void in(const dss::Message& m) {
    int top = lua_gettop(L), n = -1;
    if (dss::copy_in(L, m, &n) != LUA_OK) FAIL("copy_in: " << lua_tostring(L, -1));
    REQUIRE(lua_gettop(L) == top + n);
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, top + i);
      lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_setglobal(L, "V");
    lua_settop(L, top);
  }

  bool holds(const std::string& expr) {
    std::string code = "return (" + expr + ")";
    if (luaL_loadstring(L, code.c_str()) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
      FAIL(expr << "\n  -> " << lua_tostring(L, -1));
    bool b = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    return b;
  }

  // copy_out's bytes for what code returns.
  std::string out_bytes(const std::string& code) {
    int top = lua_gettop(L);
    if (luaL_loadstring(L, code.c_str()) != LUA_OK || lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK)
      FAIL(code << "\n  -> " << lua_tostring(L, -1));
    dss::Message m;
    REQUIRE(dss::copy_out(L, top + 1, lua_gettop(L) - top, &m) == LUA_OK);
    lua_settop(L, top);
    return std::string(reinterpret_cast<const char*>(m.data()), m.size());
  }
};

std::string bytes(const dss::Message& m) {
  return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}

void encode(const std::vector<DSS_value_t>& v, dss::Message* m) {
  REQUIRE(dss::copy_c(v.data(), int(v.size()), m) == DSS_SUCCESS);
}

bool has_integers(Lua& lua) { return lua.holds("math.type ~= nil"); }

}  // namespace

TEST_CASE("copy_c: nil, booleans, integers, numbers, strings decode as those values",
          "[copy][copy_c]") {
  Lua lua;
  dss::Message m;
  encode({DSS_vnil(), DSS_vboolean(1), DSS_vboolean(0), DSS_vboolean(7), DSS_vinteger(42),
          DSS_vnumber(-1.5), DSS_vstring("hello"), DSS_vlstring(nullptr, 0)},
         &m);
  lua.in(m);
  CHECK(lua.holds("V.n == 8"));
  CHECK(lua.holds("V[1] == nil and V[2] == true and V[3] == false and V[4] == true"));
  CHECK(lua.holds("V[5] == 42 and V[6] == -1.5"));
  CHECK(lua.holds("V[7] == 'hello' and V[8] == ''"));
}

TEST_CASE("copy_c: integers stay integers (5.3+), numbers are floats", "[copy][copy_c]") {
  Lua lua;
  dss::Message m;
  const long long big = (1LL << 53) + 1;
  encode({DSS_vinteger(3), DSS_vnumber(3.0), DSS_vinteger(std::numeric_limits<long long>::max()),
          DSS_vinteger(std::numeric_limits<long long>::min()), DSS_vinteger(big),
          DSS_vinteger(-7)},
         &m);
  lua.in(m);
  CHECK(lua.holds("V[1] == 3 and V[2] == 3 and V[6] == -7"));
  if (has_integers(lua)) {
    CHECK(lua.holds("math.type(V[1]) == 'integer' and math.type(V[2]) == 'float'"));
    CHECK(lua.holds("V[3] == math.maxinteger and V[4] == math.mininteger"));
    CHECK(lua.holds("math.type(V[5]) == 'integer' and V[5] == (1 << 53) + 1"));
  } else {
    // Only doubles: an integer is the nearest one (exact up to 2^53).
    CHECK(lua.holds("V[5] == 2^53 and V[3] == 2^63 and V[4] == -2^63"));
  }
}

TEST_CASE("copy_c: NaN, infinities, negative zero", "[copy][copy_c]") {
  Lua lua;
  dss::Message m;
  encode({DSS_vnumber(std::nan("")), DSS_vnumber(HUGE_VAL), DSS_vnumber(-HUGE_VAL),
          DSS_vnumber(-0.0)},
         &m);
  lua.in(m);
  CHECK(lua.holds("V[1] ~= V[1]"));
  CHECK(lua.holds("V[2] == math.huge and V[3] == -math.huge"));
  CHECK(lua.holds("1/V[4] == -math.huge"));
}

TEST_CASE("copy_c: byte buffers with zeros, every byte, big ones are strings",
          "[copy][copy_c]") {
  Lua lua;
  std::string all;
  for (int i = 0; i < 256; i++) all += char(i);
  std::string large(3000000, 'x');
  large[1234567] = '\0';
  dss::Message m;
  encode({DSS_vlstring("a\0b\0", 4), DSS_vlstring(all.data(), all.size()),
          DSS_vlstring(large.data(), large.size())},
         &m);
  lua.in(m);
  CHECK(lua.holds("type(V[1]) == 'string' and V[1] == 'a\\0b\\0' and #V[1] == 4"));
  CHECK(lua.holds("#V[2] == 256 and V[2]:byte(1) == 0 and V[2]:byte(256) == 255"));
  CHECK(lua.holds("#V[3] == 3000000 and V[3]:byte(1234568) == 0 and V[3]:byte(1) == 120"));
}

TEST_CASE("copy_c: the bytes are copy_out's for the same Lua values", "[copy][copy_c]") {
  Lua lua;
  dss::Message m;
  encode({DSS_vnil(), DSS_vboolean(1), DSS_vboolean(0), DSS_vinteger(3), DSS_vnumber(3.5),
          DSS_vlstring("a\0b", 3), DSS_vinteger(-1), DSS_vstring(std::string(200, 'z').c_str())},
         &m);
  CHECK(bytes(m) ==
        lua.out_bytes("return nil, true, false, 3, 3.5, 'a\\0b', -1, string.rep('z', 200)"));
  if (has_integers(lua)) {
    dss::Message f;
    encode({DSS_vnumber(3.0)}, &f);
    CHECK(bytes(f) == lua.out_bytes("return 3.0"));
  }
}

TEST_CASE("copy_c: bad values are refused, and the message is left as it was",
          "[copy][copy_c]") {
  dss::Message m;
  encode({DSS_vinteger(1)}, &m);
  const std::string before = bytes(m);
  DSS_value_t bad_tag = DSS_vnil();
  bad_tag.type = 5;
  DSS_value_t neg_tag = DSS_vnil();
  neg_tag.type = -1;
  DSS_value_t null_str = DSS_vlstring(nullptr, 1);
  for (const DSS_value_t& bad : {bad_tag, neg_tag, null_str}) {
    DSS_value_t v[3] = {DSS_vstring("ok"), bad, DSS_vinteger(2)};
    CHECK(dss::copy_c(v, 3, &m) == DSS_ERR_INVALID_ARGUMENT);
    CHECK(bytes(m) == before);
  }
  CHECK(dss::copy_c(nullptr, 1, &m) == DSS_ERR_INVALID_ARGUMENT);
  DSS_value_t one = DSS_vnil();
  CHECK(dss::copy_c(&one, -1, &m) == DSS_ERR_INVALID_ARGUMENT);
  CHECK(dss::copy_c(&one, 0, &m) == DSS_SUCCESS);  // nothing to add
  CHECK(bytes(m) == before);
  DSS_value_t zeroed;
  std::memset(&zeroed, 0, sizeof zeroed);
  CHECK(dss::copy_c(&zeroed, 1, &m) == DSS_SUCCESS);  // a zeroed value is nil
  Lua lua;
  lua.in(m);
  CHECK(lua.holds("V.n == 2 and V[1] == 1 and V[2] == nil"));
}
