// ids.hpp -- the process-wide registration table: utilid -> hub, and what
// a regc registration adds (its context and name); calling a client's
// callbacks the way its registration wants them.
//
// Ids come from a 64-bit counter and are never reused, so a stale id can
// only miss. A hub leaves the table (under the exclusive lock) before it is
// destroyed, so a hub found under the shared lock stays alive while that is
// held; past it, a reference keeps it. Lock order: the table's lock, then
// a hub's. The table is leaked on purpose: producer threads may still call
// in while the process exits, after static destructors would have run.
#ifndef DSS_CORE_IDS_HPP
#define DSS_CORE_IDS_HPP

#include "item.hpp"

#include <cstddef>
#include <cstdint>

namespace dss {

class Hub;

namespace ids {

// A lookup under the table's shared lock: the hub found stays alive until
// unlock() or the end of the scope.
class Shared {
 public:
  Shared();
  ~Shared() { unlock(); }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  Hub* find(std::uint64_t id) const;  // nullptr: unknown (stale, garbage)
  void unlock();

 private:
  bool locked_ = true;
};

// Changes, under the table's exclusive lock (taken before any hub's).
class Exclusive {
 public:
  Exclusive();
  ~Exclusive();
  Exclusive(const Exclusive&) = delete;
  Exclusive& operator=(const Exclusive&) = delete;
  // A new id for hub (with kCtxIdBit, context and name for a regc one);
  // 0 when out of memory.
  std::uint64_t add(Hub* hub, bool ctx, void* context, const char* name);
  // Forgets id and its client record.
  void remove(std::uint64_t id);
};

// The hub of id, with a reference taken; nullptr when unknown.
Hub* find_ref(std::uint64_t id);
// Removes id (not its client record: its items' cancellations still need
// the context); returns its hub with a reference, or nullptr.
Hub* erase_ref(std::uint64_t id);
// Forgets a regc registration's context and name (unreg, once its items
// have all ended).
void forget_client(std::uint64_t id);
// The context of a regc registration (nullptr for any other id).
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
// context as the last argument for a regc one. Never under a lock (they
// take the table's).
int invoke_decode(std::uint64_t id, DSS_decoder_1v0_t d, lua_State* L, void* data);
int invoke_ret(std::uint64_t id, DSS_return_1v0_t r, lua_State* L, void* data,
               int garbage);
void invoke_cancel(std::uint64_t id, DSS_cancel_1v0_t cancel);

}  // namespace ids
}  // namespace dss

#endif  // DSS_CORE_IDS_HPP
