// ids.cpp -- see ids.hpp.
#include "ids.hpp"

#include "hub.hpp"

#include <pthread.h>

#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace dss {
namespace ids {

namespace {

// A reader-writer lock that prefers writers (glibc's default prefers
// readers, and producers flooding the table with lookups could then keep
// reg and unreg waiting for good).
class RwLock {
 public:
  RwLock() {
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&l_, &a);
    pthread_rwlockattr_destroy(&a);
  }
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;
  void lock_shared() { pthread_rwlock_rdlock(&l_); }
  void lock() { pthread_rwlock_wrlock(&l_); }
  void unlock() { pthread_rwlock_unlock(&l_); }
  void unlock_shared() { pthread_rwlock_unlock(&l_); }

 private:
  pthread_rwlock_t l_;
};

// What a regc registration adds. Kept from regc to the end of its unreg
// (the cancellations of its items need the context).
struct Client {
  void* context;
  std::string name;
};

struct Table {
  RwLock mu;  // shared: lookups (every deliver); exclusive: changes
  std::unordered_map<std::uint64_t, Hub*> ids;
  std::unordered_map<std::uint64_t, Client> clients;  // regc ones
  std::uint64_t next_id = 0x5d55000;  // arbitrary, far from small garbage
};

Table& table() {
  static Table* t = new Table;
  return *t;
}

}  // namespace

Shared::Shared() { table().mu.lock_shared(); }

Hub* Shared::find(std::uint64_t id) const {
  const Table& t = table();
  auto it = t.ids.find(id);
  return it == t.ids.end() ? nullptr : it->second;
}

void Shared::unlock() {
  if (!locked_) return;
  locked_ = false;
  table().mu.unlock_shared();
}

Exclusive::Exclusive() { table().mu.lock(); }
Exclusive::~Exclusive() { table().mu.unlock(); }

std::uint64_t Exclusive::add(Hub* hub, bool ctx, void* context, const char* name) {
  Table& t = table();
  std::uint64_t id = t.next_id + 1;
  if (ctx) id |= kCtxIdBit;
  try {
    t.ids.emplace(id, hub);
    try {
      if (ctx) t.clients.emplace(id, Client{context, name ? name : ""});
    } catch (...) {
      t.ids.erase(id);
      throw;
    }
  } catch (const std::bad_alloc&) {
    return 0;
  }
  ++t.next_id;
  return id;
}

void Exclusive::remove(std::uint64_t id) {
  table().ids.erase(id);
  table().clients.erase(id);
}

Hub* find_ref(std::uint64_t id) {
  Shared s;
  Hub* hub = s.find(id);
  if (hub) hub->ref();
  return hub;
}

Hub* erase_ref(std::uint64_t id) {
  Table& t = table();
  std::lock_guard<RwLock> lock(t.mu);
  auto it = t.ids.find(id);
  if (it == t.ids.end()) return nullptr;
  Hub* hub = it->second;
  t.ids.erase(it);
  hub->ref();
  return hub;
}

void forget_client(std::uint64_t id) {
  if (!(id & kCtxIdBit)) return;
  Table& t = table();
  std::lock_guard<RwLock> lock(t.mu);
  t.clients.erase(id);
}

void* context_of(std::uint64_t id) {
  if (!(id & kCtxIdBit)) return nullptr;
  Table& t = table();
  std::shared_lock<RwLock> lock(t.mu);
  auto it = t.clients.find(id);
  return it == t.clients.end() ? nullptr : it->second.context;
}

std::size_t client_name(std::uint64_t id, char* buf, std::size_t n) {
  if (n == 0) return 0;
  buf[0] = '\0';
  if (!(id & kCtxIdBit)) return 0;
  Table& t = table();
  std::shared_lock<RwLock> lock(t.mu);
  auto it = t.clients.find(id);
  if (it == t.clients.end()) return 0;
  std::size_t len = it->second.name.copy(buf, n - 1);
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
