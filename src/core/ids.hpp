// ids.hpp -- the process-wide registration table: utilid -> hub, and what
// a regc registration adds (its context and name); calling a client's
// callbacks the way its registration wants them.
//
// A registration id names a slot of the table (its low bits) and carries
// a sequence number (the rest) that is never reused, so a stale or garbage
// id only misses: it is checked against the slot, never dereferenced.
// Lookups take no lock and write nothing (every delivery makes one); the
// hub they find may already be closed, or even recycled for another Lua
// state (hubs are never freed, see Hub::create), so the caller confirms
// under that hub's lock (live_locked) before it trusts it. A slot's id
// changes only under its hub's lock. Changes to the table (a new id, a
// slot let go) also take the table's mutex: the table's first, then a
// hub's. The table is leaked on purpose: producer threads may still call
// in while the process exits, after static destructors would have run.
#ifndef DSS_CORE_IDS_HPP
#define DSS_CORE_IDS_HPP

#include "item.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace dss {

class Hub;

namespace ids {

// The table's layout, for the two lookups below (inline: every delivery
// makes them). An id: the sequence number above kSlotBits, the slot's
// index below, and kCtxIdBit for a regc one. Ids stay below kCtxIdBit (and
// so below the item queue's kBlockingBit) and fit a pointer.
namespace detail {
// 64-bit only (as the queue's 24-byte entry): a 32-bit utilid could not
// hold a sequence number that never repeats.
static_assert(sizeof(void*) == 8, "darksidesync's core needs 64-bit pointers");
constexpr unsigned kSlotBits = 20;  // a million registrations at once
constexpr std::uint64_t kSlotMask = (std::uint64_t(1) << kSlotBits) - 1;
constexpr std::uint64_t kIdMask = kCtxIdBit - 1;
constexpr std::uint32_t kChunkBits = 10;  // slots are made 1024 at a time
constexpr std::uint32_t kChunk = 1u << kChunkBits;
constexpr std::uint32_t kChunks = std::uint32_t(1) << (kSlotBits - kChunkBits);
constexpr std::uint32_t kNone = 0xffffffffu;

struct Slot {
  std::atomic<std::uint64_t> id{0};  // live id (lookups); 0: none
  std::atomic<Hub*> hub{nullptr};
  // The id whose context and name these are, from its add until the slot
  // is reused: read as a sequence lock (owner, context, owner again).
  std::atomic<std::uint64_t> owner{0};
  std::atomic<void*> context{nullptr};
  std::string name;                 // under the table's mutex
  std::uint32_t next_free = kNone;  // under the table's mutex
  bool on_free_list = false;        // under the table's mutex
};

// Chunks of slots, made on demand and never freed: a lookup reads a chunk
// pointer and a slot, nothing else.
extern std::atomic<Slot*> g_chunks[kChunks];

inline Slot* slot_at(std::uint64_t index) {
  Slot* chunk = g_chunks[index >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? &chunk[index & (kChunk - 1)] : nullptr;
}

// The slot an id names, whatever it holds now; nullptr for garbage.
inline Slot* slot_of(std::uint64_t id) {
  if (id == 0 || (id & ~(kIdMask | kCtxIdBit))) return nullptr;
  return slot_at(id & kSlotMask);
}
}  // namespace detail

// The hub a live id names (no lock, nothing written); nullptr when the id
// is unknown. Confirm with live_locked under the hub's lock.
inline Hub* find(std::uint64_t id) {
  detail::Slot* s = detail::slot_of(id);
  if (!s || s->id.load(std::memory_order_acquire) != id) return nullptr;
  return s->hub.load(std::memory_order_acquire);
}

// Under hub's lock: whether id is registered with hub.
inline bool live_locked(std::uint64_t id, const Hub* hub) {
  detail::Slot* s = detail::slot_of(id);
  return s && s->id.load(std::memory_order_relaxed) == id &&
         s->hub.load(std::memory_order_relaxed) == hub;
}

// Changes, under the table's mutex (taken before any hub's lock).
class Writer {
 public:
  Writer();
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  // A new id for hub (with kCtxIdBit, context and name for a regc one),
  // live at once (call under hub's lock too); 0 when out of memory.
  std::uint64_t add(Hub* hub, bool ctx, void* context, const char* name);
  // Retires and lets go of id (add undone; under its hub's lock).
  void undo(std::uint64_t id);
};
// Under the id's hub's lock: lookups of id miss from now on (unreg's
// first step). Its context and name stay until release.
void retire_locked(std::uint64_t id);
// Lets a retired id's slot go (unreg's last step, once its items have all
// ended); a later registration may reuse the slot, never the id.
void release(std::uint64_t id);

// The context of a regc registration (nullptr for any other id, or once
// its slot went to another registration).
void* context_of(std::uint64_t id);
// Its name copied into buf (n > 0; always terminated): the length, or 0.
std::size_t client_name(std::uint64_t id, char* buf, std::size_t n);

// Function pointer casts between the 1v0 and 2v1 callback types, through
// void (*)(), the type GCC's -Wcast-function-type allows: a 2v1 callback is
// stored in a 1v0-typed slot and always cast back before it is called.
template <typename To, typename From>
To fn_cast(From f) {
  return reinterpret_cast<To>(reinterpret_cast<void (*)()>(f));
}

// A client callback, called as its registration wants it: with the
// context as the last argument for a regc one. Never under a lock.
int invoke_decode(std::uint64_t id, DSS_decoder_1v0_t d, lua_State* L, void* data);
int invoke_ret(std::uint64_t id, DSS_return_1v0_t r, lua_State* L, void* data,
               int garbage);
void invoke_cancel(std::uint64_t id, DSS_cancel_1v0_t cancel);

}  // namespace ids
}  // namespace dss

#endif  // DSS_CORE_IDS_HPP
