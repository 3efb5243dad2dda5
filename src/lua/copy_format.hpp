// copy_format.hpp -- the bytes of a Message as the copy routine writes
// them (copy_out.cpp; copy_c.cpp for the scalars a C thread puts) and
// reads them (copy_in.cpp). Internal to src/lua/.
//
// A message is the values one after the other, each an op byte and its
// operand. Messages never leave the process, so numbers are in the
// machine's own representation (memcpy of a lua_Integer / lua_Number).
//
//   NIL | FALSE | TRUE
//   INT   lua_Integer (5.3+ integers only)
//   FLOAT lua_Number
//   STR   varint length, the bytes
//   TABLE      u32 narray, u32 npairs, then npairs (key, value) pairs
//   TABLE_MT   as TABLE, with STR-like name (varint length, bytes) first:
//              the registered name of its metatable
//   FUNC  u64 length, the lua_dump bytes (its only upvalue, if any, _ENV)
//   HANDLE varint index into the message's references
//   BACKREF varint id: a table, function or handle already decoded
//
// Tables, functions and handles get ids 1, 2, ... in the order their
// first occurrence starts; a later occurrence is a BACKREF, so shared
// references and cycles arrive as they left. narray is a size hint for
// lua_createtable (the raw length); npairs is patched in after the table's
// traversal.
#ifndef DSS_LUA_COPY_FORMAT_HPP
#define DSS_LUA_COPY_FORMAT_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dss {
namespace copyfmt {

enum Op : unsigned char {
  kNil = 1,
  kFalse,
  kTrue,
  kInt,
  kFloat,
  kStr,
  kTable,
  kTableMt,
  kFunc,
  kHandle,
  kBackref,
};

// Tables nested deeper than this are refused (the traversal recurses on
// the C stack, one frame a level).
constexpr int kMaxDepth = 200;

// LEB128: 7 bits a byte, low first. Returns the bytes written (<= 10).
inline std::size_t put_varint(unsigned char* p, std::uint64_t v) {
  std::size_t n = 0;
  while (v >= 0x80) {
    p[n++] = static_cast<unsigned char>(v | 0x80);
    v >>= 7;
  }
  p[n++] = static_cast<unsigned char>(v);
  return n;
}

// Reads a message's bytes in order. Messages come only from copy_out, so
// a malformed one is a bug; the reader still never reads past the end
// (ok() turns false and every later read yields zeros).
class Reader {
 public:
  Reader(const unsigned char* p, std::size_t n) : p_(p), end_(p + n) {}
  bool ok() const { return ok_; }
  bool done() const { return p_ == end_; }
  unsigned char op() { return have(1) ? *p_++ : 0; }
  template <class T>
  T raw() {
    T v{};
    if (have(sizeof v)) {
      std::memcpy(&v, p_, sizeof v);
      p_ += sizeof v;
    }
    return v;
  }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64 && have(1); shift += 7) {
      unsigned char b = *p_++;
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ok_ = false;
    return 0;
  }
  // n bytes in place (null when fewer are left).
  const char* bytes(std::size_t n) {
    if (!have(n)) return nullptr;
    const char* s = reinterpret_cast<const char*>(p_);
    p_ += n;
    return s;
  }

 private:
  bool have(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) >= n) return true;
    ok_ = false;
    p_ = end_;
    return false;
  }
  const unsigned char* p_;
  const unsigned char* end_;
  bool ok_ = true;
};

}  // namespace copyfmt
}  // namespace dss

#endif  // DSS_LUA_COPY_FORMAT_HPP
