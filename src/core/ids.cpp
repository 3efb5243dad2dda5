// ids.cpp -- see ids.hpp.
#include "ids.hpp"

#include <atomic>
#include <mutex>
#include <new>
#include <string>

namespace dss {
namespace ids {

std::atomic<detail::Slot*> detail::g_chunks[detail::kChunks];

namespace {

using namespace detail;

constexpr std::uint64_t kFirstSeq = 0x5d55;  // arbitrary: ids far from small garbage

struct Table {
  std::mutex mu;
  std::uint32_t used = 0;        // slots handed out so far (never shrinks)
  std::uint32_t free = kNone;    // free list of let-go slots
  std::uint64_t next_seq = kFirstSeq;
};

Table& table() {
  static Table* t = new Table;
  return *t;
}

// A free slot's index (under the table's mutex); kNone when out of memory.
std::uint32_t take_slot(Table& t) {
  if (t.free != kNone) {
    std::uint32_t i = t.free;
    Slot* s = slot_at(i);
    t.free = s->next_free;
    s->on_free_list = false;
    return i;
  }
  if (t.used == (std::uint32_t(1) << kSlotBits)) return kNone;
  std::uint32_t c = t.used >> kChunkBits;
  if (!g_chunks[c].load(std::memory_order_relaxed)) {
    Slot* chunk = new (std::nothrow) Slot[kChunk];
    if (!chunk) return kNone;
    g_chunks[c].store(chunk, std::memory_order_release);
  }
  return t.used++;
}

// Puts a retired id's slot on the free list (under the table's mutex).
void free_slot(Table& t, std::uint64_t id) {
  Slot* s = slot_of(id);
  if (!s || s->on_free_list || s->owner.load() != id || s->id.load() != 0) return;
  s->on_free_list = true;
  s->next_free = t.free;
  t.free = std::uint32_t(id & kSlotMask);
}

}  // namespace

Writer::Writer() { table().mu.lock(); }
Writer::~Writer() { table().mu.unlock(); }

std::uint64_t Writer::add(Hub* hub, bool ctx, void* context, const char* name) {
  Table& t = table();
  std::uint32_t i = take_slot(t);
  if (i == kNone) return 0;
  Slot* s = slot_at(i);
  try {
    s->name.assign(ctx && name ? name : "");
  } catch (const std::bad_alloc&) {
    s->on_free_list = true;
    s->next_free = t.free;
    t.free = i;
    return 0;
  }
  std::uint64_t id = ((t.next_seq++ << kSlotBits) | i) & kIdMask;
  if (ctx) id |= kCtxIdBit;
  s->owner.store(0);
  s->context.store(ctx ? context : nullptr);
  s->owner.store(id);
  s->hub.store(hub, std::memory_order_release);
  s->id.store(id, std::memory_order_release);
  return id;
}

void Writer::undo(std::uint64_t id) {
  retire_locked(id);
  free_slot(table(), id);
}

void retire_locked(std::uint64_t id) {
  if (Slot* s = slot_of(id)) {
    std::uint64_t expect = id;
    s->id.compare_exchange_strong(expect, 0, std::memory_order_release);
  }
}

void release(std::uint64_t id) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  free_slot(t, id);
}

void* context_of(std::uint64_t id) {
  if (!(id & kCtxIdBit)) return nullptr;
  Slot* s = slot_of(id);
  if (!s || s->owner.load(std::memory_order_acquire) != id) return nullptr;
  void* c = s->context.load(std::memory_order_acquire);
  return s->owner.load(std::memory_order_acquire) == id ? c : nullptr;
}

std::size_t client_name(std::uint64_t id, char* buf, std::size_t n) {
  if (n == 0) return 0;
  buf[0] = '\0';
  Slot* s = (id & kCtxIdBit) ? slot_of(id) : nullptr;
  if (!s) return 0;
  std::lock_guard<std::mutex> lock(table().mu);
  if (s->owner.load() != id) return 0;
  std::size_t len = s->name.copy(buf, n - 1);
  buf[len] = '\0';
  return len;
}

int invoke_decode(std::uint64_t id, DSS_decoder_1v0_t d, lua_State* L, void* data) {
  if (!(id & kCtxIdBit)) return d(L, data, to_utilid(id));
  return fn_cast<DSS_decoder_2v0_t>(d)(L, data, to_utilid(id), context_of(id));
}

int invoke_ret(std::uint64_t id, DSS_return_1v0_t r, lua_State* L, void* data,
               int garbage) {
  if (!(id & kCtxIdBit)) return r(L, data, to_utilid(id), garbage);
  return fn_cast<DSS_return_2v0_t>(r)(L, data, to_utilid(id), garbage,
                                      context_of(id));
}

void invoke_cancel(std::uint64_t id, DSS_cancel_1v0_t cancel) {
  if (!(id & kCtxIdBit)) return cancel(to_utilid(id));
  fn_cast<DSS_cancel_2v0_t>(cancel)(to_utilid(id), context_of(id));
}

}  // namespace ids
}  // namespace dss
