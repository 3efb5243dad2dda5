// tickets.hpp -- the hub's ticket table: the parked blocking items (decoded,
// waiting on the Lua side for their return callback), each behind a
// TicketId that the Lua side keeps as a plain number, never a pointer into
// the core. A ticket is a slot and the slot's generation, bumped each time
// the slot is let go, so a stale or forged ticket only misses. A handle
// lost without its finalizer leaves its item parked until close, unreg or
// its producer's timeout end it. Everything here is under the hub's lock.
#ifndef DSS_CORE_TICKETS_HPP
#define DSS_CORE_TICKETS_HPP

#include "item.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dss {

class Tickets {
 public:
  Tickets() = default;
  Tickets(const Tickets&) = delete;
  Tickets& operator=(const Tickets&) = delete;

  // Parks b: its ticket (also in b->ticket), or 0 when out of memory.
  TicketId put(Blocking* b);
  // The item parked behind t; nullptr for a stale or garbage ticket.
  Blocking* get(TicketId t) const;
  // Lets t's slot go (t must be live).
  void drop(TicketId t);
  // Back to empty (nothing parked any more).
  void reset() {
    std::vector<Slot>().swap(slots_);
    free_slot_ = kNoSlot;
    parked_ = 0;
  }
  // Items parked.
  std::size_t parked() const { return parked_; }
  // The parked items by slot, for the cancel walk: slots() of them, each
  // at(k) nullptr when free.
  std::size_t slots() const { return slots_.size(); }
  Blocking* at(std::size_t k) const { return slots_[k].item; }

 private:
  static constexpr std::uint32_t kNoSlot = 0xffffffffu;
  struct Slot {
    Blocking* item;
    std::uint32_t gen;
    std::uint32_t next_free;
  };
  std::vector<Slot> slots_;
  std::uint32_t free_slot_ = kNoSlot;  // head of the free list
  std::size_t parked_ = 0;             // slots holding an item
};

}  // namespace dss

#endif  // DSS_CORE_TICKETS_HPP
