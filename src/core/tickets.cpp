// tickets.cpp -- see tickets.hpp.
#include "tickets.hpp"

#include <new>

namespace dss {

TicketId Tickets::put(Blocking* b) {
  std::uint32_t i = free_slot_;
  if (i != kNoSlot) {
    free_slot_ = slots_[i].next_free;
  } else {
    if (slots_.size() >= kNoSlot - 1) return 0;
    try {
      slots_.push_back(Slot{nullptr, 1, kNoSlot});
    } catch (const std::bad_alloc&) {
      return 0;
    }
    i = std::uint32_t(slots_.size() - 1);
  }
  Slot& s = slots_[i];
  s.item = b;
  ++parked_;
  b->ticket = (TicketId(s.gen) << 32) | (TicketId(i) + 1);
  return b->ticket;
}

Blocking* Tickets::get(TicketId t) const {
  std::uint32_t i = std::uint32_t(t);  // the slot's index + 1
  if (i == 0 || i > slots_.size()) return nullptr;
  const Slot& s = slots_[i - 1];
  if (s.gen != std::uint32_t(t >> 32)) return nullptr;
  return s.item;
}

void Tickets::drop(TicketId t) {
  std::uint32_t i = std::uint32_t(t) - 1;
  Slot& s = slots_[i];
  s.item->ticket = 0;
  s.item = nullptr;
  if (++s.gen == 0) s.gen = 1;
  s.next_free = free_slot_;
  free_slot_ = i;
  --parked_;
}

}  // namespace dss
