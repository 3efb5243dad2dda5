// message.hpp -- values on their way from one Lua state to another, as the
// core holds them: the encoded bytes, and references to shared objects the
// bytes point at (channel handles: refcounted core objects).
//
// The bytes are written and read only by src/lua/copy_*.cpp; the core
// moves a Message around and destroys it, nothing else. A reference is
// owned by the Message from add_ref() on and released exactly once, by the
// destructor (or clear()), unless the Message was moved from; the decoder
// takes a reference of its own for what it pushes, so a message decoded
// twice, or never, is still released once.
//
// Never throws: growth is malloc/realloc, and a failure is a false return
// the caller turns into its own error (a Lua memory error for the copy
// routine). Small messages (one number, a short string) live in the
// inline buffer: no allocation at all.
#ifndef DSS_CORE_MESSAGE_HPP
#define DSS_CORE_MESSAGE_HPP

#include <cstddef>
#include <cstdint>

namespace dss {

class Message {
 public:
  // A reference to a shared object: release(obj) drops it. tag names the
  // object's type for whoever decodes it (for the copy routine: the
  // index of its handle type, copy.hpp).
  struct Ref {
    void* obj;
    void (*release)(void* obj);
    std::uint32_t tag;
  };

  static constexpr std::size_t kInline = 40;

  Message() = default;
  ~Message() { clear(); }
  Message(Message&& o) noexcept { take(o); }
  Message& operator=(Message&& o) noexcept {
    if (this != &o) {
      clear();
      take(o);
    }
    return *this;
  }
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  const unsigned char* data() const { return heap_ ? heap_ : inline_; }
  unsigned char* data() { return heap_ ? heap_ : inline_; }
  std::size_t size() const { return size_; }

  // Appends n bytes; false (nothing appended) when out of memory.
  bool append(const void* p, std::size_t n);
  // Appends n bytes left for the caller to fill (a length patched later);
  // null when out of memory.
  unsigned char* grow(std::size_t n);
  // Back to an earlier state: keeps the first `size` bytes and the first
  // `nrefs` references, releasing the others (an encoding that failed
  // half-way).
  void truncate(std::size_t size, std::size_t nrefs);

  // Takes ownership of r. False when out of memory: then the caller still
  // owns r (and must release it).
  bool add_ref(const Ref& r);
  std::size_t nrefs() const { return nrefs_; }
  const Ref& ref(std::size_t i) const { return refs_[i]; }

  // Releases every reference, once, and empties the message.
  void clear();

 private:
  bool reserve(std::size_t need);
  void take(Message& o) noexcept;

  unsigned char* heap_ = nullptr;  // null: the bytes are in inline_
  std::size_t size_ = 0;
  std::size_t cap_ = kInline;
  Ref* refs_ = nullptr;
  std::size_t nrefs_ = 0;
  std::size_t refcap_ = 0;
  unsigned char inline_[kInline];
};

}  // namespace dss

#endif  // DSS_CORE_MESSAGE_HPP
