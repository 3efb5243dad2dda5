// hub.cpp -- see hub.hpp.
#include "hub.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <new>
#include <unordered_map>

namespace dss {

namespace {

// The process-wide table of live registrations: utilid -> hub. Ids come
// from a 64-bit counter and are never reused, so a stale id can only miss.
// The table is leaked on purpose: producer threads may still call in while
// the process exits, after static destructors would have run.
struct Table {
  std::mutex mu;
  std::unordered_map<std::uint64_t, Hub*> ids;
  std::uint64_t next_id = 0x5d55000;  // arbitrary, far from small garbage
};

Table& table() {
  static Table* t = new Table;
  return *t;
}

// Looks up the hub of a utilid and takes a reference on it.
Hub* find_ref(std::uint64_t id) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.ids.find(id);
  if (it == t.ids.end()) return nullptr;
  it->second->ref();
  return it->second;
}

// Removes id from the table; returns its hub with a reference, or nullptr.
Hub* erase_ref(std::uint64_t id) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.ids.find(id);
  if (it == t.ids.end()) return nullptr;
  Hub* hub = it->second;
  t.ids.erase(it);
  hub->ref();
  return hub;
}

void unlink_pending(Item** list, Item* item) {
  if (item->prev) item->prev->next = item->next;
  else *list = item->next;
  if (item->next) item->next->prev = item->prev;
  item->next = item->prev = nullptr;
}

}  // namespace

Hub* Hub::create() { return new (std::nothrow) Hub(); }

Hub::~Hub() {
  // The binding closes a hub before its last reference goes, which removes
  // its ids from the table; make sure no id can outlive the hub anyway.
  {
    Table& t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    for (const Registration& r : regs_) t.ids.erase(r.id);
  }
  int fd = sock_.load();
  if (fd >= 0) ::close(fd);
}

void Hub::ref() { refs_.fetch_add(1, std::memory_order_relaxed); }

void Hub::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

// --- registrations -------------------------------------------------------

void* Hub::reg(void* libid, DSS_cancel_1v0_t cancel, int* err) {
  int dummy;
  if (!err) err = &dummy;
  if (!cancel) {
    *err = DSS_ERR_NO_CANCEL_PROVIDED;
    return nullptr;
  }
  std::uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state() != State::running) {
      *err = DSS_ERR_NOT_STARTED;
      return nullptr;
    }
    if (std::uint64_t existing = find_libid_locked(libid)) {
      *err = DSS_ERR_ALREADY_REGISTERED;
      return to_utilid(existing);
    }
    Table& t = table();
    try {
      std::lock_guard<std::mutex> tlock(t.mu);
      id = ++t.next_id;
      t.ids.emplace(id, this);
      try {
        regs_.push_back(Registration{id, libid, cancel, false});
      } catch (...) {
        t.ids.erase(id);
        throw;
      }
    } catch (const std::bad_alloc&) {
      *err = DSS_ERR_OUT_OF_MEMORY;
      return nullptr;
    }
  }
  *err = DSS_SUCCESS;
  return to_utilid(id);
}

void* Hub::getutilid(void* libid, int* err) {
  int dummy;
  if (!err) err = &dummy;
  std::lock_guard<std::mutex> lock(mu_);
  if (state() != State::running) {
    *err = DSS_ERR_NOT_STARTED;
    return nullptr;
  }
  std::uint64_t id = find_libid_locked(libid);
  *err = id ? DSS_SUCCESS : DSS_ERR_UNKNOWN_LIB;
  return id ? to_utilid(id) : nullptr;
}

std::uint64_t Hub::find_libid_locked(void* libid) const {
  for (const Registration& r : regs_)
    if (r.libid == libid) return r.id;
  return 0;
}

bool Hub::registered_locked(std::uint64_t id) const {
  for (const Registration& r : regs_)
    if (r.id == id) return true;
  return false;
}

// --- deliver -----------------------------------------------------------

int Hub::deliver(void* utilid, DSS_decoder_1v0_t decode, DSS_return_1v0_t ret,
                 void* data) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = find_ref(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  int rc = decode ? hub->deliver_local(id, decode, ret, data)
                  : DSS_ERR_NO_DECODE_PROVIDED;
  hub->unref();
  return rc;
}

int Hub::deliver_local(std::uint64_t id, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data) {
  Waiter waiter;
  Item local;
  Item* item = &local;
  if (!ret) {
    item = new (std::nothrow) Item;
    if (!item) return DSS_ERR_OUT_OF_MEMORY;
  } else {
    item->waiter = &waiter;
  }
  item->id = id;
  item->decode = decode;
  item->ret = ret;
  item->data = data;

  std::size_t count;
  {
    std::unique_lock<std::mutex> lock(mu_);
    int rc = DSS_SUCCESS;
    if (state() != State::running) rc = DSS_ERR_NOT_STARTED;
    else if (!registered_locked(id)) rc = DSS_ERR_INVALID_UTILID;
    if (rc != DSS_SUCCESS) {
      lock.unlock();
      if (item != &local) delete item;
      return rc;
    }
    if (tail_) tail_->next = item;
    else head_ = item;
    tail_ = item;
    count = ++count_;
    if (!ret) {
      // Fire and forget: the item may be gone already once we unlock.
      lock.unlock();
      return notify(count);
    }
  }
  int rc = notify(count);
  std::unique_lock<std::mutex> lock(mu_);
  waiter.cv.wait(lock, [&] { return waiter.released; });
  return rc;
}

int Hub::notify(std::size_t count) {
  int port = port_.load(std::memory_order_acquire);
  if (port == 0) return DSS_SUCCESS;
  int fd = sock_.load(std::memory_order_acquire);
  if (fd < 0) return DSS_ERR_UDP_SEND_FAILED;
  char buf[32];
  int len = std::snprintf(buf, sizeof buf, " %zu", count);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(std::uint16_t(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ssize_t sent = ::sendto(fd, buf, std::size_t(len), MSG_NOSIGNAL,
                          reinterpret_cast<sockaddr*>(&to), sizeof to);
  return sent == len ? DSS_SUCCESS : DSS_ERR_UDP_SEND_FAILED;
}

bool Hub::set_port(int port) {
  if (port < 0 || port > 65535) return false;
  if (port != 0 && sock_.load() < 0) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int expected = -1;
    if (!sock_.compare_exchange_strong(expected, fd)) ::close(fd);
  }
  port_.store(port, std::memory_order_release);  // after the socket exists
  return true;
}

// --- unreg and cancellation ---------------------------------------------

int Hub::unreg(void* utilid) {
  std::uint64_t id = id_of(utilid);
  Hub* hub = erase_ref(id);
  if (!hub) return DSS_ERR_INVALID_UTILID;
  int rc = hub->unreg_local(id);
  hub->unref();
  return rc;
}

int Hub::unreg_local(std::uint64_t id) {
  Item* queued = nullptr;
  Item* pending = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool found = false;
    for (std::size_t i = 0; i < regs_.size(); ++i) {
      if (regs_[i].id == id) {
        regs_.erase(regs_.begin() + std::ptrdiff_t(i));
        found = true;
        break;
      }
    }
    if (!found) return DSS_ERR_INVALID_UTILID;
    take_items_locked(id, &queued, &pending);
  }
  cancel_lists(queued, pending);
  return DSS_SUCCESS;
}

void Hub::take_items_locked(std::uint64_t id, Item** queued, Item** pending) {
  // Split the queue, keeping order in both halves.
  Item* keep_head = nullptr;
  Item* keep_tail = nullptr;
  Item* out_tail = nullptr;
  for (Item* it = head_; it;) {
    Item* next = it->next;
    it->next = nullptr;
    if (id == 0 || it->id == id) {
      if (out_tail) out_tail->next = it;
      else *queued = it;
      out_tail = it;
      --count_;
    } else {
      if (keep_tail) keep_tail->next = it;
      else keep_head = it;
      keep_tail = it;
    }
    it = next;
  }
  head_ = keep_head;
  tail_ = keep_tail;

  for (Item* it = pending_; it;) {
    Item* next = it->next;
    if (id == 0 || it->id == id) {
      unlink_pending(&pending_, it);
      it->ticket->item = nullptr;  // the Lua side's call becomes a no-op
      it->ticket = nullptr;
      it->next = *pending;
      *pending = it;
    }
    it = next;
  }
}

void Hub::cancel_lists(Item* queued, Item* pending) {
  while (queued) {
    Item* next = queued->next;
    queued->decode(nullptr, queued->data, queued->utilid());
    finish(queued);
    queued = next;
  }
  while (pending) {
    Item* next = pending->next;
    cancel_decoded(pending);
    pending = next;
  }
}

void Hub::cancel_decoded(Item* item) {
  item->ret(nullptr, item->data, item->utilid(), 0);
  finish(item);
}

// --- consumer side -------------------------------------------------------

Item* Hub::pop() {
  std::lock_guard<std::mutex> lock(mu_);
  Item* item = head_;
  if (!item) return nullptr;
  head_ = item->next;
  if (!head_) tail_ = nullptr;
  item->next = nullptr;
  --count_;
  return item;
}

std::size_t Hub::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Hub::finish(Item* item) {
  if (Waiter* w = item->waiter) {
    // The item lives on the waiting producer's stack: notify under the lock
    // so the producer cannot return (and pop its stack) before we are done.
    std::lock_guard<std::mutex> lock(mu_);
    w->released = true;
    w->cv.notify_one();
  } else {
    delete item;
  }
}

bool Hub::park(Item* item, Ticket* ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state() != State::running || !registered_locked(item->id)) return false;
  item->ticket = ticket;
  ticket->item = item;
  item->prev = nullptr;
  item->next = pending_;
  if (pending_) pending_->prev = item;
  pending_ = item;
  return true;
}

Item* Hub::claim(Ticket* ticket) {
  Hub* hub = ticket->hub;
  if (!hub) return nullptr;
  std::lock_guard<std::mutex> lock(hub->mu_);
  Item* item = ticket->item;
  if (!item) return nullptr;
  unlink_pending(&hub->pending_, item);
  item->ticket = nullptr;
  ticket->item = nullptr;
  return item;
}

bool Hub::pending(Ticket* ticket) {
  Hub* hub = ticket->hub;
  if (!hub) return false;
  std::lock_guard<std::mutex> lock(hub->mu_);
  return ticket->item != nullptr;
}

// --- close -----------------------------------------------------------------

void Hub::close() {
  Item* queued = nullptr;
  Item* pending = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state() != State::running) return;
    state_.store(State::closing, std::memory_order_release);
    // Cancel the items first: none can be polled any more, and a client
    // whose cancel waits for its producers must not wait on us.
    take_items_locked(0, &queued, &pending);
  }
  cancel_lists(queued, pending);
  // Cancel the clients one at a time, without copying the list (no
  // allocation on this path). Each registration is cancelled once: the flag
  // also covers one that another thread is unregistering right now (it has
  // left the id table but not yet our list).
  for (;;) {
    std::uint64_t id = 0;
    DSS_cancel_1v0_t cancel = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Registration& r : regs_) {
        if (!r.cancelled) {
          r.cancelled = true;
          id = r.id;
          cancel = r.cancel;
          break;
        }
      }
    }
    if (!cancel) break;
    void* utilid = to_utilid(id);
    cancel(utilid);
    unreg(utilid);  // INVALID_UTILID here just means the client did it
  }
  {
    // Nothing can have been queued or parked since (the state is closing),
    // but make sure of it.
    std::lock_guard<std::mutex> lock(mu_);
    queued = pending = nullptr;
    take_items_locked(0, &queued, &pending);
    state_.store(State::closed, std::memory_order_release);
  }
  cancel_lists(queued, pending);
}

}  // namespace dss
