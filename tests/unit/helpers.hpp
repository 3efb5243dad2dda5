// helpers.hpp -- shared scaffolding of the core's unit tests.
//
// The tests act as the Lua side themselves, through the very calls
// src/lua/module.cpp makes (l_poll, dispatch_tramp, wt_call, wt_gc): take()
// an item, call_decoder() it with a fake (never dereferenced) lua_State
// pointer, then settle() it with what the decoder returned (or finish() it,
// as when the decoder raised); settle() parks a decoded blocking item and
// hands back its ticket, or ends it by cancellation itself when its
// registration or the hub went away meanwhile. A parked item is answered
// later with claim() / call_return() / finish_returned(), chained by
// Hub::answer() as wt_call and wt_gc do. What happens to an item at each
// step is the core's business: the helpers below decide nothing about it. Client callbacks only record what happened; all
// assertions run on the test's main thread (Catch2 v2 assertions are not
// thread-safe).
//
// Waits are bounded: a correct core never needs them to expire; they exist
// so that a broken core makes a test fail instead of hang.
#ifndef DSS_UNIT_HELPERS_HPP
#define DSS_UNIT_HELPERS_HPP

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "hub.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace ut {

using dss::Blocking;
using dss::Hub;
using dss::Taken;
using dss::TicketId;

// "Did not hang": generous, only ever reached when the core is broken.
constexpr std::chrono::seconds kHang{20};
// Negative checks ("still blocked", "no datagram"): a correct core never
// ends them early, so a short window cannot make a correct core fail.
constexpr std::chrono::milliseconds kQuiet{100};

// The fake Lua state handed to client callbacks; never dereferenced.
inline lua_State* fake_L() {
  static int anchor;
  return reinterpret_cast<lua_State*>(&anchor);
}

// Polls pred until it holds or the bound expires; true when it held.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds bound = kHang) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// --- per-item record: pData of every test item ---------------------------

struct Rec {
  int decode_result = 0;  // what the decoder returns when L != NULL
  int ret_result = 0;     // what the return callback returns when L != NULL
  int producer = 0;       // free for the test's use
  int seq = 0;
  std::atomic<int> decoded{0};           // decode(L != NULL)
  std::atomic<int> decode_cancelled{0};  // decode(NULL)
  std::atomic<int> returned{0};          // ret(L != NULL, garbage 0)
  std::atomic<int> collected{0};         // ret(L != NULL, garbage 1)
  std::atomic<int> ret_cancelled{0};     // ret(NULL)
  std::atomic<int> bad_args{0};          // L neither NULL nor fake_L(),
                                         // or a cancel with garbage != 0
  std::atomic<void*> utilid{nullptr};    // utilid of the last callback

  int calls() const {
    return decoded + decode_cancelled + returned + collected + ret_cancelled;
  }
};

inline int rec_decode(lua_State* L, void* p, void* u) {
  Rec* r = static_cast<Rec*>(p);
  r->utilid = u;
  if (!L) {
    ++r->decode_cancelled;
    return 0;
  }
  if (L != fake_L()) ++r->bad_args;
  ++r->decoded;
  return r->decode_result;
}

inline int rec_ret(lua_State* L, void* p, void* u, int garbage) {
  Rec* r = static_cast<Rec*>(p);
  r->utilid = u;
  if (!L) {
    if (garbage != 0) ++r->bad_args;
    ++r->ret_cancelled;
    return 0;
  }
  if (L != fake_L()) ++r->bad_args;
  if (garbage) ++r->collected;
  else ++r->returned;
  return r->ret_result;
}

// --- client cancel callbacks --------------------------------------------------

struct CancelLog {
  std::mutex mu;
  std::vector<void*> calls;     // utilid of each cancel call, in order
  std::vector<int> unreg_rcs;   // rc of unreg called from cancel_unreg
  std::function<void(void*)> hook;  // extra work, run by cancel_hook

  static CancelLog& get() {
    static CancelLog log;
    return log;
  }
  void reset() {
    std::lock_guard<std::mutex> lock(mu);
    calls.clear();
    unreg_rcs.clear();
    hook = nullptr;
  }
  int count(void* u) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (void* c : calls) n += c == u;
    return n;
  }
  std::size_t total() {
    std::lock_guard<std::mutex> lock(mu);
    return calls.size();
  }
  void record(void* u) {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back(u);
  }
};

// Only records: close() must then unregister the client itself.
inline void cancel_record(void* u) { CancelLog::get().record(u); }

// Records and unregisters, as a well-behaved 1.0 client does.
inline void cancel_unreg(void* u) {
  CancelLog::get().record(u);
  int rc = Hub::unreg(u);
  std::lock_guard<std::mutex> lock(CancelLog::get().mu);
  CancelLog::get().unreg_rcs.push_back(rc);
}

// Records, then runs the test's hook (set in CancelLog::hook).
inline void cancel_hook(void* u) {
  CancelLog::get().record(u);
  std::function<void(void*)> h;
  {
    std::lock_guard<std::mutex> lock(CancelLog::get().mu);
    h = CancelLog::get().hook;
  }
  if (h) h(u);
}

// Distinct library ids: addresses of these statics.
inline void* libid(int i) {
  static char ids[64];
  return &ids[i];
}

// --- hub ownership ----------------------------------------------------------

// Owns a hub as the binding does: close() then unref() at the end.
struct HubHandle {
  Hub* h;
  HubHandle() : h(Hub::create()) { REQUIRE(h != nullptr); }
  ~HubHandle() {
    h->close();
    h->unref();
  }
  HubHandle(const HubHandle&) = delete;
  HubHandle& operator=(const HubHandle&) = delete;
  Hub* operator->() const { return h; }
  Hub* get() const { return h; }
};

// Registers libid with cancel on hub; REQUIREs success.
inline void* must_reg(Hub* hub, void* lib, DSS_cancel_1v0_t cancel = cancel_unreg) {
  int err = 0;
  void* u = hub->reg(lib, cancel, &err);
  REQUIRE(err == DSS_SUCCESS);
  REQUIRE(u != nullptr);
  return u;
}

// The waiting-thread callback: called by Lua (garbage 0) or collected
// uncalled (garbage 1). Claims the item back from the ticket, calls its
// return callback and releases the producer, as wt_call / wt_gc do.
// False when the item had already ended (timed out, cancelled or answered)
// or the ticket is stale or garbage, and nothing was called.
inline bool answer(Hub* hub, TicketId ticket, int garbage = 0) {
  return hub->answer(ticket, [=](Blocking* b) { hub->call_return(b, fake_L(), garbage); });
}

// A waiting-thread callback as the Lua side holds it (module.cpp's Wt):
// the ticket of its item, 0 once spent. Holds a hub reference (the Lua side
// holds its box, which outlives the hub's close). Its destructor is wt_gc:
// a ticket still pending is answered with garbage = 1 (only on a failed
// test; passing tests spend their tickets).
struct Wt {
  Hub* hub;
  TicketId ticket;
  Wt(Hub* h, TicketId t) : hub(h), ticket(t) { hub->ref(); }
  ~Wt() {
    TicketId t = ticket;
    ticket = 0;
    if (t) answer(hub, t, 1);
    hub->unref();
  }
  Wt(const Wt&) = delete;
  Wt& operator=(const Wt&) = delete;
};

// wt(...): only the first call counts (the ticket is spent by it).
inline bool answer(Wt& w, int garbage = 0) {
  TicketId t = w.ticket;
  w.ticket = 0;
  return answer(w.hub, t, garbage);
}

// --- producers ---------------------------------------------------------------

// The flags and timeout of a deliver2() (see Producer).
struct V2 {
  unsigned flags;
  long timeout_ms;
};

// Runs one deliver() -- or deliver2(), given a V2 -- on its own thread (for
// blocking deliveries).
class Producer {
 public:
  Producer(void* utilid, DSS_decoder_1v0_t dec, DSS_return_1v0_t ret,
           void* data)
      : rc_(std::make_shared<std::promise<int>>()), fut_(rc_->get_future().share()) {
    auto rc = rc_;
    thread_ = std::thread(
        [rc, utilid, dec, ret, data] { rc->set_value(Hub::deliver(utilid, dec, ret, data)); });
  }
  Producer(void* utilid, DSS_decoder_1v0_t dec, DSS_return_1v0_t ret,
           void* data, V2 v2)
      : rc_(std::make_shared<std::promise<int>>()), fut_(rc_->get_future().share()) {
    auto rc = rc_;
    thread_ = std::thread([rc, utilid, dec, ret, data, v2] {
      rc->set_value(Hub::deliver2(utilid, dec, ret, data, v2.flags, v2.timeout_ms));
    });
  }
  ~Producer() {
    // On a failed test the producer may still be blocked: give the test's
    // cleanup (close) a chance, then let the thread go rather than hang.
    if (fut_.wait_for(kHang) == std::future_status::ready) thread_.join();
    else thread_.detach();
  }
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // True when deliver returned within the bound.
  bool done_within(std::chrono::milliseconds bound) {
    return fut_.wait_for(bound) == std::future_status::ready;
  }
  bool done() { return done_within(std::chrono::milliseconds(0)); }
  // deliver's return code; only after done().
  int rc() { return fut_.get(); }

 private:
  std::shared_ptr<std::promise<int>> rc_;
  std::shared_future<int> fut_;
  std::thread thread_;
};

// --- consumer actions (as src/lua/module.cpp drives the hub) ----------------

// Takes, REQUIREs an item.
inline Taken must_take(Hub* hub) {
  Taken t = hub->take();
  REQUIRE(t);
  return t;
}

// Calls the item's decoder with the fake L (as poll and dispatch do);
// returns what it returned.
inline int decode(Hub* hub, const Taken& t) { return hub->call_decoder(t, fake_L()); }

// --- wake-ups ------------------------------------------------------------------

// Whether fd is readable right now (poll(2) with a 0 timeout).
inline bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// A UDP socket bound to 127.0.0.1 on a free port.
struct UdpListener {
  int fd = -1;
  int port = 0;
  UdpListener() {
    fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = 0;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    REQUIRE(port > 0);
  }
  ~UdpListener() { ::close(fd); }
  UdpListener(const UdpListener&) = delete;
  UdpListener& operator=(const UdpListener&) = delete;

  // One datagram's payload; "<none>" when nothing arrived within the bound.
  std::string recv(std::chrono::milliseconds bound) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, int(bound.count()));
    if (r <= 0) return "<none>";
    char buf[256];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) return "<error>";
    return std::string(buf, std::size_t(n));
  }
};

}  // namespace ut

#endif  // DSS_UNIT_HELPERS_HPP
