// copy_path.cpp -- the encoder's error messages: what could not be copied,
// and where (copy_path.hpp has the path's format).
//
// The text is built in a fixed buffer, not a std::string: lua_error
// longjmps out of here, and nothing with a destructor may be skipped.
#include "copy_path.hpp"

#include <cctype>
#include <cstdio>
#include <cstring>

namespace dss {
namespace copypath {

namespace {

constexpr int kShown = 4;       // levels printed at each end of a long path
constexpr size_t kKeyCut = 24;  // string key bytes printed

struct Text {
  char buf[512];
  size_t len = 0;
  void add(const char* s, size_t n) {
    if (n > sizeof buf - 1 - len) n = sizeof buf - 1 - len;
    std::memcpy(buf + len, s, n);
    len += n;
    buf[len] = '\0';
  }
  void add(const char* s) { add(s, std::strlen(s)); }
};

bool is_name(const char* s, size_t n) {
  if (n == 0 || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (size_t i = 0; i < n; i++)
    if (!std::isalnum(static_cast<unsigned char>(s[i])) && s[i] != '_') return false;
  return true;
}

// ["..."]: quotes and backslashes escaped, other unprintables as \ddd.
void add_quoted(Text* t, const char* s, size_t n) {
  t->add("[\"");
  for (size_t i = 0; i < n && i < kKeyCut; i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char esc[8];
    if (c == '"' || c == '\\') std::snprintf(esc, sizeof esc, "\\%c", c);
    else if (!std::isprint(c)) std::snprintf(esc, sizeof esc, "\\%u", c);
    else std::snprintf(esc, sizeof esc, "%c", c);
    t->add(esc);
  }
  t->add(n > kKeyCut ? "...\"]" : "\"]");
}

// One level: the key its entry is under (or [key]).
void add_node(Text* t, lua_State* L, const Node* n) {
  char num[48];
  lua_Integer i;
  if (n->in_key) return t->add("[key]");
  switch (lua_type(L, n->key)) {
    case LUA_TSTRING: {
      size_t len;
      const char* s = lua_tolstring(L, n->key, &len);  // a string: no conversion
      if (!is_name(s, len) || len > kKeyCut) return add_quoted(t, s, len);
      t->add(".");
      return t->add(s, len);
    }
    case LUA_TNUMBER:
      if (dss_tointegerx(L, n->key, &i))
        std::snprintf(num, sizeof num, "[%lld]", static_cast<long long>(i));
      else
        std::snprintf(num, sizeof num, "[%.14g]", static_cast<double>(lua_tonumber(L, n->key)));
      return t->add(num);
    case LUA_TBOOLEAN:
      return t->add(lua_toboolean(L, n->key) ? "[true]" : "[false]");
    default:
      t->add("[");
      t->add(lua_typename(L, lua_type(L, n->key)));
      return t->add("]");
  }
}

// The path from the top down: the chain runs bottom up, so it is laid out
// in an array first (at most kMaxDepth levels and their keys).
void add_path(Text* t, lua_State* L, const Node* at) {
  const Node* nodes[1024];
  int n = 0;
  for (const Node* p = at; p != nullptr && n < 1024; p = p->up) nodes[n++] = p;
  for (int k = n - 1; k >= 0; k--) {
    int from_top = n - 1 - k;
    if (n > 2 * kShown && from_top == kShown) t->add(" ... ");
    if (n > 2 * kShown && from_top >= kShown && k >= kShown) continue;
    add_node(t, L, nodes[k]);
  }
}

}  // namespace

void fail(lua_State* L, int value, const Node* at, const char* what) {
  Text t;
  char head[32];
  t.add("darksidesync: cannot copy ");
  t.add(what);
  std::snprintf(head, sizeof head, " (value %d", value);
  t.add(head);
  if (at != nullptr) {
    t.add(", at ");
    add_path(&t, L, at);
  }
  t.add(")");
  lua_pushlstring(L, t.buf, t.len);
  lua_error(L);
  __builtin_unreachable();
}

}  // namespace copypath
}  // namespace dss
