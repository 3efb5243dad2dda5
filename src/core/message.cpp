// message.cpp -- growth, references and moves of a Message (message.hpp).
#include "message.hpp"

#include <cstdlib>
#include <cstring>

namespace dss {

// Doubles the capacity until `need` more bytes fit; moves the bytes from
// the inline buffer to the heap the first time.
bool Message::reserve(std::size_t need) {
  if (need <= cap_ - size_) return true;
  std::size_t cap = cap_;
  while (cap - size_ < need) {
    if (cap > SIZE_MAX / 2) return false;
    cap *= 2;
  }
  void* p = heap_ ? std::realloc(heap_, cap) : std::malloc(cap);
  if (p == nullptr) return false;
  if (heap_ == nullptr) std::memcpy(p, inline_, size_);
  heap_ = static_cast<unsigned char*>(p);
  cap_ = cap;
  return true;
}

bool Message::append(const void* p, std::size_t n) {
  unsigned char* at = grow(n);
  if (at == nullptr) return false;
  if (n) std::memcpy(at, p, n);
  return true;
}

unsigned char* Message::grow(std::size_t n) {
  if (!reserve(n)) return nullptr;
  unsigned char* at = data() + size_;
  size_ += n;
  return at;
}

bool Message::add_ref(const Ref& r) {
  if (nrefs_ == refcap_) {
    std::size_t cap = refcap_ ? refcap_ * 2 : 4;
    void* p = std::realloc(refs_, cap * sizeof(Ref));
    if (p == nullptr) return false;
    refs_ = static_cast<Ref*>(p);
    refcap_ = cap;
  }
  refs_[nrefs_++] = r;
  return true;
}

void Message::truncate(std::size_t size, std::size_t nrefs) {
  if (size < size_) size_ = size;
  // Each reference once: the count drops before the call, so a release
  // that (wrongly) reached this message again would not see it.
  while (nrefs_ > nrefs) {
    const Ref r = refs_[--nrefs_];
    r.release(r.obj);
  }
}

void Message::clear() {
  truncate(0, 0);
  std::free(refs_);
  std::free(heap_);
  refs_ = nullptr;
  refcap_ = 0;
  heap_ = nullptr;
  size_ = 0;
  cap_ = kInline;
}

// Steals o's bytes and references; o is left empty (its destructor
// releases nothing).
void Message::take(Message& o) noexcept {
  heap_ = o.heap_;
  size_ = o.size_;
  cap_ = o.cap_;
  if (heap_ == nullptr) std::memcpy(inline_, o.inline_, size_);
  refs_ = o.refs_;
  nrefs_ = o.nrefs_;
  refcap_ = o.refcap_;
  o.heap_ = nullptr;
  o.size_ = 0;
  o.cap_ = kInline;
  o.refs_ = nullptr;
  o.nrefs_ = 0;
  o.refcap_ = 0;
}

}  // namespace dss
