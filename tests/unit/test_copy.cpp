// The copy routine between Lua states (src/lua/copy.hpp, docs/sessions.md):
// values go from one real lua_State to another through a Message, and are
// checked in the target with Lua code. Built against whichever Lua the
// build selects (the checks that differ by version ask Lua, e.g. whether
// math.type exists).
#include <catch2/catch.hpp>

#include "copy.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

namespace {

// Runs code in L; any error fails the test with its message.
void run(lua_State* L, const std::string& code) {
  int status = luaL_loadstring(L, code.c_str());
  if (status == LUA_OK) status = lua_pcall(L, 0, 0, 0);
  if (status != LUA_OK) FAIL(code << "\n  -> " << lua_tostring(L, -1));
}

// Pushes what code returns; returns how many values.
int push(lua_State* L, const std::string& code) {
  int top = lua_gettop(L);
  int status = luaL_loadstring(L, code.c_str());
  if (status == LUA_OK) status = lua_pcall(L, 0, LUA_MULTRET, 0);
  if (status != LUA_OK) FAIL(code << "\n  -> " << lua_tostring(L, -1));
  return lua_gettop(L) - top;
}

// Whether the Lua expression holds in L.
bool holds(lua_State* L, const std::string& expr) {
  push(L, "return (" + expr + ")");
  bool b = lua_toboolean(L, -1) != 0;
  lua_pop(L, 1);
  return b;
}

struct State {
  lua_State* L;
  State() : L(luaL_newstate()) { luaL_openlibs(L); }
  ~State() {
    if (L) lua_close(L);
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

// Two states and the copy between them: values from `src`, copied into
// `dst` as the global table V (V.n values).
struct Pair {
  State src, dst;

  // Encodes what code returns in src: LUA_OK, else the error message.
  int out(const std::string& code, dss::Message* m, std::string* err = nullptr) {
    int top = lua_gettop(src.L);
    int n = push(src.L, code);
    int status = dss::copy_out(src.L, top + 1, n, m);
    if (status != LUA_OK) {
      REQUIRE(lua_gettop(src.L) == top + n + 1);
      if (err) *err = lua_tostring(src.L, -1);
    } else {
      REQUIRE(lua_gettop(src.L) == top + n);
    }
    lua_settop(src.L, top);
    return status;
  }

  // Decodes m into dst's global V.
  void in(const dss::Message& m) {
    int top = lua_gettop(dst.L), n = -1;
    int status = dss::copy_in(dst.L, m, &n);
    if (status != LUA_OK) FAIL("copy_in: " << lua_tostring(dst.L, -1));
    REQUIRE(lua_gettop(dst.L) == top + n);
    lua_createtable(dst.L, n, 1);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(dst.L, top + i);
      lua_rawseti(dst.L, -2, i);
    }
    lua_pushinteger(dst.L, n);
    lua_setfield(dst.L, -2, "n");
    lua_setglobal(dst.L, "V");
    lua_settop(dst.L, top);
  }

  void copy(const std::string& code) {
    dss::Message m;
    std::string err;
    if (out(code, &m, &err) != LUA_OK) FAIL(code << "\n  -> " << err);
    in(m);
  }

  bool holds(const std::string& expr) { return ::holds(dst.L, expr); }

  std::string error(const std::string& code) {
    dss::Message m;
    std::string err;
    REQUIRE(out(code, &m, &err) != LUA_OK);
    REQUIRE(m.size() == 0);
    return err;
  }
};

}  // namespace

TEST_CASE("copy: nil, booleans, numbers, strings", "[copy]") {
  Pair p;
  p.copy("return nil, true, false, 42, -1.5, 'hello', ''");
  CHECK(p.holds("V.n == 7"));
  CHECK(p.holds("V[1] == nil and V[2] == true and V[3] == false"));
  CHECK(p.holds("V[4] == 42 and V[5] == -1.5"));
  CHECK(p.holds("V[6] == 'hello' and V[7] == ''"));
  p.copy("return");
  CHECK(p.holds("V.n == 0"));
  p.copy("return nil");
  CHECK(p.holds("V.n == 1 and V[1] == nil"));
}

TEST_CASE("copy: integers stay integers, floats floats (5.3+)", "[copy]") {
  Pair p;
  p.copy("return 3, 3.0, 2^53, -0x7fffffff");
  CHECK(p.holds("V[1] == 3 and V[2] == 3 and V[3] == 2^53 and V[4] == -0x7fffffff"));
  if (!holds(p.src.L, "math.type ~= nil")) return;
  p.copy("return 3, 3.0, math.maxinteger, math.mininteger, -0.0, 1 // 1");
  CHECK(p.holds("math.type(V[1]) == 'integer' and math.type(V[2]) == 'float'"));
  CHECK(p.holds("V[3] == math.maxinteger and math.type(V[3]) == 'integer'"));
  CHECK(p.holds("V[4] == math.mininteger and math.type(V[4]) == 'integer'"));
  CHECK(p.holds("math.type(V[5]) == 'float' and math.type(V[6]) == 'integer'"));
  p.copy("return {[1] = 'i', [2.5] = 'f', [2^60] = 'big'}");
  CHECK(p.holds("V[1][1] == 'i' and V[1][2.5] == 'f' and V[1][2^60] == 'big'"));
}

TEST_CASE("copy: NaN, infinities, negative zero", "[copy]") {
  Pair p;
  p.copy("local zero = 0.0 return 0/0, 1/0, -1/0, -zero, zero");  // 5.1 folds the constant -0.0
  CHECK(p.holds("V[1] ~= V[1]"));
  CHECK(p.holds("V[2] == math.huge and V[3] == -math.huge"));
  CHECK(p.holds("1/V[4] == -math.huge and 1/V[5] == math.huge"));
}

TEST_CASE("copy: strings with zeros, every byte, big strings", "[copy]") {
  Pair p;
  p.copy("return 'a\\0b\\0', string.rep('\\0', 3)");
  CHECK(p.holds("V[1] == 'a\\0b\\0' and #V[1] == 4 and V[2] == '\\0\\0\\0'"));
  p.copy("local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end return table.concat(t)");
  CHECK(p.holds("#V[1] == 256 and V[1]:byte(1) == 0 and V[1]:byte(256) == 255"));
  p.copy("return string.rep('xyz', 1000000)");
  CHECK(p.holds("V[1] == string.rep('xyz', 1000000)"));
}

TEST_CASE("copy: nested tables, every kind of key", "[copy]") {
  Pair p;
  p.copy("return {1, 2, 3, x = {y = {z = 'deep'}}, [true] = 'yes', [false] = 'no', "
         "[1.5] = 'float', ['a b'] = 'spaced', [{}] = 'tablekey'}");
  CHECK(p.holds("#V[1] == 3 and V[1][3] == 3 and V[1].x.y.z == 'deep'"));
  CHECK(p.holds("V[1][true] == 'yes' and V[1][false] == 'no' and V[1][1.5] == 'float'"));
  CHECK(p.holds("V[1]['a b'] == 'spaced'"));
  CHECK(p.holds("(function() for k, v in pairs(V[1]) do if type(k) == 'table' then "
                "return v == 'tablekey' and next(k) == nil end end end)()"));
  p.copy("local t = {} for i = 1, 10000 do t[i] = i * 2 end t.n = 10000 return t");
  CHECK(p.holds("#V[1] == 10000 and V[1][10000] == 20000 and V[1].n == 10000"));
}

TEST_CASE("copy: shared references and cycles are preserved", "[copy]") {
  Pair p;
  p.copy("local s = {v = 1} return {a = s, b = s}");
  CHECK(p.holds("V[1].a == V[1].b and V[1].a.v == 1"));
  p.copy("local s = {} return s, s, {s}");
  CHECK(p.holds("V[1] == V[2] and V[3][1] == V[1]"));
  p.copy("local t = {} t.self = t return t");
  CHECK(p.holds("V[1].self == V[1]"));
  p.copy("local a, b = {}, {} a.b = b b.a = a return a");
  CHECK(p.holds("V[1].b.a == V[1]"));
  p.copy("local k = {} local t = {[k] = k} return t, k");
  CHECK(p.holds("V[1][V[2]] == V[2]"));
  p.copy("local f = function() return 1 end return {f, f}, f");
  CHECK(p.holds("V[1][1] == V[1][2] and V[1][1] == V[2] and V[2]() == 1"));
}

TEST_CASE("copy: functions are dumped and loaded; globals are the target's", "[copy]") {
  Pair p;
  p.copy("return function(a, b) return a + b end");
  CHECK(p.holds("V[1](2, 3) == 5"));
  run(p.src.L, "X = 'source'");
  run(p.dst.L, "X = 'target'");
  p.copy("return function() return X, string.upper('ok') end");
  CHECK(p.holds("V[1]() == 'target' and select(2, V[1]()) == 'OK'"));
  run(p.dst.L, "X = 'changed'");
  CHECK(p.holds("V[1]() == 'changed'"));
  p.copy("return {run = function(t) return t.n end, n = 7}");
  CHECK(p.holds("V[1]:run() == 7"));
  p.copy("return function(...) local t = {...} return #t, function() end end");
  CHECK(p.holds("V[1](1, 2, 3) == 3"));
}

TEST_CASE("copy: errors name the value and where", "[copy]") {
  Pair p;
  CHECK(p.error("return print") == "darksidesync: cannot copy a C function (value 1)");
  CHECK(p.error("return 1, coroutine.create(function() end)") ==
        "darksidesync: cannot copy a thread (value 2)");
  CHECK(p.error("return io.stdout") == "darksidesync: cannot copy a userdata (value 1)");
  CHECK(p.error("return {a = {b = {io.stdout}}}") ==
        "darksidesync: cannot copy a userdata (value 1, at .a.b[1])");
  CHECK(p.error("return 'x', {x = {['a b'] = print}}") ==
        "darksidesync: cannot copy a C function (value 2, at .x[\"a b\"])");
  CHECK(p.error("return {[print] = 1}") == "darksidesync: cannot copy a C function (value 1, at [key])");
  CHECK(p.error("return {t = {[{x = print}] = 1}}") ==
        "darksidesync: cannot copy a C function (value 1, at .t[key].x)");
  CHECK(p.error("return {[{}] = print}") == "darksidesync: cannot copy a C function (value 1, at [table])");
  CHECK(p.error("return {[true] = {[2.5] = print}}") ==
        "darksidesync: cannot copy a C function (value 1, at [true][2.5])");
  CHECK(p.error("return {['\\0\"q'] = print}") ==
        "darksidesync: cannot copy a C function (value 1, at [\"\\0\\\"q\"])");
  CHECK(p.error("return {[string.rep('k', 30)] = print}") ==
        "darksidesync: cannot copy a C function (value 1, at [\"kkkkkkkkkkkkkkkkkkkkkkkk...\"])");
  CHECK(p.error("return {a = {b = {c = {d = {e = {f = {g = {h = {i = print}}}}}}}}}") ==
        "darksidesync: cannot copy a C function (value 1, at .a.b.c.d ... .f.g.h.i)");
}

TEST_CASE("copy: light userdata and LuaJIT cdata are errors", "[copy]") {
  Pair p;
  dss::Message m;
  static int anchor;
  lua_pushlightuserdata(p.src.L, &anchor);
  REQUIRE(dss::copy_out(p.src.L, -1, 1, &m) != LUA_OK);
  CHECK(std::string(lua_tostring(p.src.L, -1)) == "darksidesync: cannot copy a light userdata (value 1)");
  lua_settop(p.src.L, 0);
  if (holds(p.src.L, "jit ~= nil and pcall(require, 'ffi')"))
    CHECK(p.error("return {c = require('ffi').new('int[1]')}") ==
          "darksidesync: cannot copy a cdata (value 1, at .c)");
}

TEST_CASE("copy: functions with upvalues other than _ENV are errors", "[copy]") {
  Pair p;
  CHECK(p.error("local x = 1 return function() return x end") ==
        "darksidesync: cannot copy function with upvalue 'x' (value 1)");
  CHECK(p.error("local up = {} return {f = {g = function() return up end}}") ==
        "darksidesync: cannot copy function with upvalue 'up' (value 1, at .f.g)");
  CHECK(p.error("local function rec(n) return n > 0 and rec(n - 1) end return rec") ==
        "darksidesync: cannot copy function with upvalue 'rec' (value 1)");
  // A function that uses globals only has _ENV (5.2+) or nothing (5.1).
  p.copy("return function() return print ~= nil end");
  CHECK(p.holds("V[1]() == true"));
  // 5.2+: a local _ENV is an upvalue named _ENV too: re-bound to the
  // target's globals. 5.1: an ordinary local, so an error.
  run(p.dst.L, "x = 'target x'");
  const char* local_env = "local _ENV = {x = 'source x'} return function() return _ENV.x end";
  if (holds(p.src.L, "_ENV ~= nil")) {
    p.copy(local_env);
    CHECK(p.holds("V[1]() == 'target x'"));
  } else {
    CHECK(p.error(local_env) == "darksidesync: cannot copy function with upvalue '_ENV' (value 1)");
  }
}

TEST_CASE("copy: tables nested deeper than 200 are refused", "[copy]") {
  Pair p;
  p.copy("local t = {} local c = t for i = 2, 200 do c.a = {} c = c.a end c.leaf = 1 return t");
  CHECK(p.holds("(function() local c, d = V[1], 1 while c.a do c, d = c.a, d + 1 end "
                "return d == 200 and c.leaf == 1 end)()"));
  std::string deep = "darksidesync: cannot copy tables nested more than 200 deep (value 1, at .a.a.a.a ... .a.a.a.a)";
  CHECK(p.error("local t = {} local c = t for i = 2, 201 do c.a = {} c = c.a end return t") == deep);
  CHECK(p.error("local t = {} local c = t for i = 2, 100000 do c.a = {} c = c.a end return t") == deep);
  // A cycle deep down is a back reference, not more depth.
  p.copy("local t = {} local c = t for i = 2, 200 do c.a = {} c = c.a end c.a = t return t");
  CHECK(p.holds("V[1].a.a.a == V[1].a.a.a"));
}

TEST_CASE("copy: a failed copy leaves the message as it was", "[copy]") {
  Pair p;
  dss::Message m;
  REQUIRE(p.out("return 1, 'two'", &m) == LUA_OK);
  size_t size = m.size();
  REQUIRE(p.out("return {1, 2, {3, print}}", &m) != LUA_OK);
  CHECK(m.size() == size);
  REQUIRE(p.out("return {4}", &m) == LUA_OK);
  p.in(m);
  CHECK(p.holds("V.n == 3 and V[1] == 1 and V[2] == 'two' and V[3][1] == 4"));
}

TEST_CASE("copy: metatables travel only when registered in both states", "[copy]") {
  Pair p;
  auto reg = [](lua_State* L, const char* name, const char* mt_code) {
    push(L, mt_code);
    lua_pushstring(L, name);
    dss::copy_register_metatable(L, -1, -2);
    lua_pop(L, 1);
    lua_setglobal(L, name);
  };
  reg(p.src.L, "Point", "return {__index = {kind = 'source'}}");
  reg(p.dst.L, "Point", "return {__index = {kind = function() return 'target' end}}");
  reg(p.src.L, "OnlySrc", "return {__index = {x = 1}}");
  reg(p.dst.L, "OnlyDst", "return {__index = {x = 1}}");
  p.copy("return setmetatable({1}, Point), setmetatable({}, OnlySrc), setmetatable({}, {})");
  CHECK(p.holds("getmetatable(V[1]) == Point and V[1].kind() == 'target' and V[1][1] == 1"));
  CHECK(p.holds("getmetatable(V[2]) == nil and getmetatable(V[3]) == nil"));
  run(p.src.L, "OnlyDst = {}");
  p.copy("local s = setmetatable({}, Point) return {s, s, setmetatable({}, OnlyDst)}");
  CHECK(p.holds("getmetatable(V[1][1]) == Point and V[1][1] == V[1][2]"));
  CHECK(p.holds("getmetatable(V[1][3]) == nil"));
  // A metatable with __metatable and __pairs is neither asked nor obeyed.
  run(p.src.L, "Point.__metatable = false; Point.__pairs = error");
  p.copy("return setmetatable({z = 26}, Point)");
  CHECK(p.holds("getmetatable(V[1]) == Point and rawget(V[1], 'z') == 26"));
}

// A refcounted object behind a handle type, counted process-wide.
namespace {

struct Obj {
  std::atomic<int> refs{1};
  int value = 0;
};
std::atomic<int> g_retains{0}, g_releases{0};

void obj_unref(Obj* o) {
  if (--o->refs == 0) delete o;
}
void* obj_retain(lua_State* L, int idx) {
  Obj* o = *static_cast<Obj**>(lua_touserdata(L, idx));
  ++o->refs;
  ++g_retains;
  return o;
}
void obj_release(void* p) {
  ++g_releases;
  obj_unref(static_cast<Obj*>(p));
}
int obj_gc(lua_State* L) {
  obj_unref(*static_cast<Obj**>(lua_touserdata(L, 1)));
  return 0;
}
int obj_value(lua_State* L) {
  lua_pushinteger(L, (*static_cast<Obj**>(luaL_checkudata(L, 1, "test.handle")))->value);
  return 1;
}
// The userdata holds a reference of its own, taken once it is set up.
void obj_push(lua_State* L, void* p) {
  Obj** ud = static_cast<Obj**>(lua_newuserdata(L, sizeof(Obj*)));
  *ud = nullptr;
  luaL_getmetatable(L, "test.handle");
  lua_setmetatable(L, -2);
  Obj* o = static_cast<Obj*>(p);
  ++o->refs;
  *ud = o;
}
int obj_gc_safe(lua_State* L) {
  Obj** ud = static_cast<Obj**>(lua_touserdata(L, 1));
  if (*ud) obj_gc(L);
  return 0;
}
void obj_open(lua_State* L) {
  luaL_newmetatable(L, "test.handle");
  lua_pushcfunction(L, obj_gc_safe);
  lua_setfield(L, -2, "__gc");
  lua_newtable(L);
  lua_pushcfunction(L, obj_value);
  lua_setfield(L, -2, "value");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
// A new object with value v, its only reference held by a userdata: the
// global `name`.
Obj* obj_new(lua_State* L, const char* name, int v) {
  Obj* o = new Obj;
  o->value = v;
  o->refs = 0;
  obj_push(L, o);
  lua_setglobal(L, name);
  return o;
}
void register_handle() {
  static const dss::CopyHandleType type = {"test.handle", obj_retain, obj_push, obj_release};
  REQUIRE(dss::copy_register_handle(type));
}

}  // namespace

TEST_CASE("copy: handle types travel as references", "[copy]") {
  register_handle();
  REQUIRE(dss::copy_register_handle({"test.handle", obj_retain, obj_push, obj_release}));
  g_retains = g_releases = 0;
  Pair p;
  obj_open(p.src.L);
  obj_open(p.dst.L);
  Obj* o = obj_new(p.src.L, "H", 42);
  {
    dss::Message m;
    REQUIRE(p.out("return H, {h = H}, H", &m) == LUA_OK);
    CHECK(g_retains == 1);  // the same userdata thrice: one reference
    CHECK(m.nrefs() == 1);
    CHECK(o->refs == 2);
    p.in(m);
    CHECK(o->refs == 3);
    CHECK(p.holds("V[1]:value() == 42 and V[2].h == V[1] and V[3] == V[1]"));
    p.in(m);  // decoded twice: each userdata has its own reference
    CHECK(o->refs == 4);
  }
  CHECK(g_releases == 1);
  CHECK(o->refs == 3);
  run(p.dst.L, "V = nil; collectgarbage(); collectgarbage()");
  CHECK(o->refs == 1);
  {
    dss::Message m;  // never decoded: released all the same
    REQUIRE(p.out("return H", &m) == LUA_OK);
    CHECK(o->refs == 2);
    dss::Message moved(std::move(m));
    CHECK(m.nrefs() == 0);
    dss::Message again;
    again = std::move(moved);
    CHECK(o->refs == 2);
  }
  CHECK(o->refs == 1);
  CHECK(g_retains == g_releases);
}

TEST_CASE("copy: other userdata of a state with handle types are errors", "[copy]") {
  register_handle();
  Pair p;
  obj_open(p.src.L);
  CHECK(p.error("return {io.stdout}") == "darksidesync: cannot copy a userdata (value 1, at [1])");
}

TEST_CASE("copy: Message moves, truncates and releases once", "[copy]") {
  static int released;
  released = 0;
  auto rel = [](void*) { released++; };
  dss::Message m;
  for (int i = 0; i < 100; i++) REQUIRE(m.append("abcdefgh", 8));
  REQUIRE(m.size() == 800);
  REQUIRE(m.add_ref({nullptr, rel, 0}));
  REQUIRE(m.add_ref({nullptr, rel, 0}));
  m.truncate(8, 1);
  CHECK(released == 1);
  CHECK(m.size() == 8);
  CHECK(std::memcmp(m.data(), "abcdefgh", 8) == 0);
  dss::Message n(std::move(m));
  CHECK(m.size() == 0);
  CHECK(n.size() == 8);
  m.clear();
  CHECK(released == 1);
  n = dss::Message();
  CHECK(released == 2);
}

// An allocator that fails once its budget of allocations is spent.
namespace {

struct Budget {
  long left = -1;  // -1: no limit
};

// Shrinking never fails: Lua relies on that (the manual, lua_Alloc).
void* budget_alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  Budget* b = static_cast<Budget*>(ud);
  if (nsize == 0) {
    std::free(ptr);
    return nullptr;
  }
  bool shrink = ptr != nullptr && nsize <= osize;
  if (b->left == 0 && !shrink) return nullptr;
  if (b->left > 0) b->left--;
  return std::realloc(ptr, nsize);
}

struct LimitedState {
  Budget budget;
  lua_State* L;
  LimitedState() : L(lua_newstate(budget_alloc, &budget)) {
    if (L) luaL_openlibs(L);
  }
  ~LimitedState() {
    if (L) lua_close(L);
  }
};

const char* kRich =
    "local s = {v = 'shared'} local t = {1, 2.5, 'str', s, s, {deep = {deeper = {s}}}}"
    " t.self = t t.f = function(a) return a, X end t[t] = t return t, H, 'tail'";

}  // namespace

TEST_CASE("copy: memory failures in the source are errors, never leaks", "[copy][alloc]") {
  register_handle();
  g_retains = g_releases = 0;
  int ok = 0, failed = 0;
  for (long n = 0; n < 400 && ok < 5; n++) {
    LimitedState s;
    if (s.L == nullptr) return;  // LuaJIT on x64: no custom allocator; covered elsewhere
    obj_open(s.L);
    obj_new(s.L, "H", 7);
    int top = lua_gettop(s.L);
    int nv = push(s.L, kRich);
    dss::Message m;
    s.budget.left = n;
    int status = dss::copy_out(s.L, top + 1, nv, &m);
    s.budget.left = -1;
    if (status == LUA_OK) {
      ok++;
      State t;
      obj_open(t.L);
      int got = 0;
      REQUIRE(dss::copy_in(t.L, m, &got) == LUA_OK);
      REQUIRE(got == 3);
    } else {
      failed++;
      CHECK(status == LUA_ERRMEM);
      CHECK(std::string(lua_tostring(s.L, -1)) == "not enough memory");
      CHECK(m.size() == 0);
      CHECK(m.nrefs() == 0);
    }
  }
  CHECK(ok == 5);
  CHECK(failed > 0);
  CHECK(g_retains == g_releases);
}

TEST_CASE("copy: memory failures in the target are errors, never leaks", "[copy][alloc]") {
  register_handle();
  g_retains = g_releases = 0;
  State s;
  obj_open(s.L);
  Obj* o = obj_new(s.L, "H", 7);
  int top = lua_gettop(s.L);
  int nv = push(s.L, kRich);
  dss::Message m;
  REQUIRE(dss::copy_out(s.L, top + 1, nv, &m) == LUA_OK);
  int ok = 0, failed = 0;
  for (long n = 0; n < 400 && ok < 5; n++) {
    LimitedState t;
    if (t.L == nullptr) return;
    obj_open(t.L);
    run(t.L, "X = 'target'");
    int ttop = lua_gettop(t.L), got = -1;
    t.budget.left = n;
    int status = dss::copy_in(t.L, m, &got);
    t.budget.left = -1;
    if (status == LUA_OK) {
      ok++;
      REQUIRE(got == 3);
      lua_settop(t.L, ttop + 1);
      lua_setglobal(t.L, "T");
      CHECK(holds(t.L, "T.self == T and T[4] == T[5] and T[6].deep.deeper[1] == T[4] and T[T] == T"));
      CHECK(holds(t.L, "select(2, T.f(1)) == 'target'"));
    } else {
      failed++;
      CHECK(got == 0);
      CHECK(lua_gettop(t.L) == ttop + 1);
    }
  }
  CHECK(ok == 5);
  CHECK(failed > 0);
  m.clear();
  lua_settop(s.L, 0);
  CHECK(g_retains == g_releases);
  CHECK(o->refs == 1);
}

// Not a test: the cost of small messages (run with `unit_tests "[bench]"`).
// Prints ns per copy_out + copy_in, each through a fresh Message, as a
// channel send and receive would do.
namespace {

double ns_per_copy(Pair* p, const char* code, int iterations) {
  int n = push(p->src.L, code), got = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; i++) {
    dss::Message m;
    dss::copy_out(p->src.L, 1, n, &m);
    dss::copy_in(p->dst.L, m, &got);
    lua_settop(p->dst.L, 0);
  }
  auto t1 = std::chrono::steady_clock::now();
  lua_settop(p->src.L, 0);
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / iterations;
}

}  // namespace

TEST_CASE("copy: cost of small messages", "[.][bench]") {
  Pair p;
  const char* cases[] = {"return 42", "return 'hello'", "return 1, 2.5, 'three'", "return {1, 2, 3}",
                         "return {x = 1, y = {z = 'deep'}}", "return function(a) return a end"};
  for (const char* c : cases) {
    ns_per_copy(&p, c, 10000);  // warm up
    std::printf("%-40s %8.1f ns\n", c, ns_per_copy(&p, c, 200000));
  }
}
