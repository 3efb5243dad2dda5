// Cancellation: close(), unreg, settle() refusing to park, claim on spent
// and empty tickets.
// Exact counts: every item ends exactly once, every client's cancel runs
// exactly once.
#include "helpers.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

using namespace ut;

TEST_CASE("close: K queued items and P blocked producers end by cancellation; "
          "each client cancelled once", "[cancel][close]") {
  CancelLog::get().reset();
  const int K = 5, P = 3;
  std::vector<Rec> queued(K), blocking(P);
  Rec after;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0), cancel_unreg);   // unregisters itself
  void* b = must_reg(hub.get(), libid(1), cancel_record);  // does not
  for (int i = 0; i < K; ++i)
    REQUIRE(Hub::deliver(i % 2 ? b : a, rec_decode, nullptr, &queued[std::size_t(i)]) ==
            DSS_SUCCESS);
  std::vector<std::unique_ptr<Producer>> prods;
  for (int i = 0; i < P; ++i)
    prods.push_back(std::make_unique<Producer>(i % 2 ? b : a, rec_decode, rec_ret,
                                               &blocking[std::size_t(i)]));
  REQUIRE(wait_until([&] { return hub->size() == std::size_t(K + P); }));
  for (auto& p : prods) CHECK_FALSE(p->done());

  hub->close();
  CHECK(hub->state() == Hub::State::closed);
  int decode_cancels = 0;
  for (auto& r : queued) {
    CHECK(r.decode_cancelled == 1);
    CHECK(r.calls() == 1);
    decode_cancels += r.decode_cancelled;
  }
  for (auto& r : blocking) {
    CHECK(r.decode_cancelled == 1);  // queued: the decoder, not ret
    CHECK(r.calls() == 1);
    decode_cancels += r.decode_cancelled;
  }
  CHECK(decode_cancels == K + P);
  for (auto& p : prods) {
    REQUIRE(p->done_within(kHang));
    CHECK(p->rc() == DSS_SUCCESS);
  }
  CHECK(hub->size() == 0);
  CHECK_FALSE(hub->take());

  // Each client's cancel, exactly once, with its own utilid.
  CHECK(CancelLog::get().total() == 2);
  CHECK(CancelLog::get().count(a) == 1);
  CHECK(CancelLog::get().count(b) == 1);
  REQUIRE(CancelLog::get().unreg_rcs.size() == 1);
  CHECK(CancelLog::get().unreg_rcs[0] == DSS_SUCCESS);

  // Both are unregistered now, including b whose cancel did not unreg.
  for (void* u : {a, b}) {
    int rc = Hub::deliver(u, rec_decode, nullptr, &after);
    CHECK((rc == DSS_ERR_INVALID_UTILID || rc == DSS_ERR_NOT_STARTED));
    CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  }
  int err = 0;
  CHECK(hub->reg(libid(2), cancel_unreg, &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);
  CHECK(hub->getutilid(libid(1), &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);

  // Idempotent: a second close changes and calls nothing.
  hub->close();
  CHECK(hub->state() == Hub::State::closed);
  CHECK(CancelLog::get().total() == 2);
  for (auto& r : queued) CHECK(r.calls() == 1);
  for (auto& r : blocking) CHECK(r.calls() == 1);
  CHECK(after.calls() == 0);
}

TEST_CASE("close: cancels queued and parked items of every client, then the clients",
          "[cancel][close]") {
  CancelLog::get().reset();
  Rec q1, q2, parked, third;
  parked.decode_result = 2;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0), cancel_unreg);
  void* b = must_reg(hub.get(), libid(1), cancel_record);
  void* c = must_reg(hub.get(), libid(2), cancel_unreg);
  Producer pp(b, rec_decode, rec_ret, &parked);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 2);
  Wt w(hub.get(), hub->settle(it, 2));
  REQUIRE(w.ticket != 0);
  REQUIRE(Hub::deliver(a, rec_decode, nullptr, &q1) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(c, rec_decode, nullptr, &q2) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(c, rec_decode, nullptr, &third) == DSS_SUCCESS);
  REQUIRE(hub->size() == 3);
  hub->close();
  REQUIRE(pp.done_within(kHang));
  CHECK(pp.rc() == DSS_SUCCESS);
  CHECK(parked.decoded == 1);
  CHECK(parked.ret_cancelled == 1);
  CHECK(parked.calls() == 2);
  CHECK(hub->claim(w.ticket) == nullptr);
  CHECK(q1.decode_cancelled == 1);
  CHECK(q2.decode_cancelled == 1);
  CHECK(third.decode_cancelled == 1);
  CHECK(CancelLog::get().total() == 3);
  for (void* u : {a, b, c}) CHECK(CancelLog::get().count(u) == 1);
  CHECK(CancelLog::get().unreg_rcs == std::vector<int>{DSS_SUCCESS, DSS_SUCCESS});
}

TEST_CASE("close: a client's cancel may wait for its blocked producers", "[cancel][close]") {
  // The items are cancelled before the clients are, so a cancel that joins
  // its producer threads (which are blocked in deliver) does not deadlock.
  CancelLog::get().reset();
  Rec r1, r2;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0), cancel_hook);
  Producer p1(u, rec_decode, rec_ret, &r1);
  Producer p2(u, rec_decode, rec_ret, &r2);
  REQUIRE(wait_until([&] { return hub->size() == 2; }));
  std::atomic<int> producers_done_in_cancel{-1};
  CancelLog::get().hook = [&](void* id) {
    bool ok = wait_until([&] { return p1.done() && p2.done(); });
    producers_done_in_cancel = ok ? 1 : 0;
    Hub::unreg(id);
  };
  hub->close();
  CHECK(producers_done_in_cancel == 1);
  CHECK(CancelLog::get().count(u) == 1);
  CHECK(r1.decode_cancelled == 1);
  CHECK(r2.decode_cancelled == 1);
}

TEST_CASE("close: inside a client's cancel the hub refuses new work", "[cancel][close]") {
  CancelLog::get().reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0), cancel_hook);
  int deliver_rc = 0, blocking_rc = 0, reg_err = 0, get_err = 0;
  void* reg_ret = libid(9);
  void* get_ret = libid(9);
  std::size_t size_seen = 99;
  Hub* h = hub.get();
  CancelLog::get().hook = [&](void* id) {
    deliver_rc = Hub::deliver(id, rec_decode, nullptr, &r);
    {
      // Must not block (on a thread, so that a broken core fails the test
      // instead of hanging it).
      Producer p(id, rec_decode, rec_ret, &r);
      blocking_rc = p.done_within(kHang) ? p.rc() : 1;
    }
    reg_ret = h->reg(libid(3), cancel_unreg, &reg_err);
    get_ret = h->getutilid(libid(0), &get_err);
    size_seen = h->size();
    // No unreg: close does it.
  };
  hub->close();
  CHECK(CancelLog::get().count(u) == 1);
  CHECK((deliver_rc == DSS_ERR_NOT_STARTED || deliver_rc == DSS_ERR_INVALID_UTILID));
  CHECK((blocking_rc == DSS_ERR_NOT_STARTED || blocking_rc == DSS_ERR_INVALID_UTILID));
  CHECK(reg_ret == nullptr);
  CHECK(reg_err == DSS_ERR_NOT_STARTED);
  CHECK(get_ret == nullptr);
  CHECK(get_err == DSS_ERR_NOT_STARTED);
  CHECK(size_seen == 0);
  CHECK(r.calls() == 0);
  CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
}

TEST_CASE("close: only the closed hub's clients and items are cancelled", "[cancel][close]") {
  CancelLog::get().reset();
  Rec ra, rb;
  HubHandle a, b;
  void* ua = must_reg(a.get(), libid(0), cancel_unreg);
  void* ub = must_reg(b.get(), libid(0), cancel_unreg);
  REQUIRE(Hub::deliver(ua, rec_decode, nullptr, &ra) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  a->close();
  CHECK(CancelLog::get().count(ua) == 1);
  CHECK(CancelLog::get().count(ub) == 0);
  CHECK(ra.decode_cancelled == 1);
  CHECK(rb.calls() == 0);
  CHECK(b->state() == Hub::State::running);
  CHECK(b->size() == 1);
  int err = 0;
  CHECK(b->getutilid(libid(0), &err) == ub);
  CHECK(err == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  CHECK(b->size() == 2);
  b->close();
  CHECK(CancelLog::get().count(ub) == 1);
  CHECK(rb.decode_cancelled == 2);
}

TEST_CASE("close: a hub with no registrations and no items closes cleanly", "[cancel][close]") {
  CancelLog::get().reset();
  HubHandle hub;
  hub->close();
  CHECK(hub->state() == Hub::State::closed);
  hub->close();
  CHECK(hub->state() == Hub::State::closed);
  CHECK(CancelLog::get().total() == 0);
}

TEST_CASE("settle: does not park when the registration went away between take and "
          "settle; ends the item by cancellation itself",
          "[cancel][park]") {
  CancelLog::get().reset();
  Rec r;
  r.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Producer p(u, rec_decode, rec_ret, &r);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(it.blk != nullptr);
  // The taken item is the consumer's: unreg does not cancel it...
  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  CHECK(r.calls() == 0);
  CHECK_FALSE(p.done_within(kQuiet));
  REQUIRE(decode(hub.get(), it) == 1);
  CHECK_FALSE(p.done_within(kQuiet));
  std::uint64_t before = hub->stats().cancelled;
  // ...but settle does not park it: it ends it by cancellation, on this
  // thread, before it returns (no ticket).
  CHECK(hub->settle(it, 1) == 0);
  CHECK(r.ret_cancelled == 1);
  CHECK(hub->stats().cancelled == before + 1);
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.ret_cancelled == 1);
  CHECK(r.calls() == 2);
  CHECK(r.bad_args == 0);
}

TEST_CASE("settle: does not park when the hub closed between take and settle",
          "[cancel][park]") {
  CancelLog::get().reset();
  Rec r;
  r.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Producer p(u, rec_decode, rec_ret, &r);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(it.blk != nullptr);
  hub->close();
  CHECK(CancelLog::get().count(u) == 1);
  CHECK(r.calls() == 0);
  REQUIRE(decode(hub.get(), it) == 1);
  CHECK(hub->settle(it, 1) == 0);
  CHECK(r.ret_cancelled == 1);
  REQUIRE(p.done_within(kHang));
  CHECK(r.ret_cancelled == 1);
  CHECK(r.calls() == 2);
}

TEST_CASE("claim: no ticket (0) yields nullptr", "[cancel][park]") {
  HubHandle hub;
  CHECK(hub->claim(0) == nullptr);
  CHECK(hub->claim(0) == nullptr);
  CHECK_FALSE(hub->pending(0));
  CHECK_FALSE(answer(hub.get(), 0));
}

TEST_CASE("pending: true exactly while a parked item waits for its return", "[cancel][park]") {
  CancelLog::get().reset();
  Rec r1, r2, r3;
  r1.decode_result = r2.decode_result = r3.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  CHECK_FALSE(hub->pending(0));  // no ticket
  Wt t1(hub.get(), 0), t2(hub.get(), 0), t3(hub.get(), 0);
  Producer p1(u, rec_decode, rec_ret, &r1);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Producer p2(u, rec_decode, rec_ret, &r2);
  REQUIRE(wait_until([&] { return hub->size() == 2; }));
  Producer p3(u, rec_decode, rec_ret, &r3);
  REQUIRE(wait_until([&] { return hub->size() == 3; }));
  Wt* boxes[] = {&t1, &t2, &t3};
  for (Wt* w : boxes) {
    Taken it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 1);
    w->ticket = hub->settle(it, 1);
    REQUIRE(w->ticket != 0);
    CHECK(hub->pending(w->ticket));
  }
  // Ended by the Lua side: claimed, no longer pending.
  Blocking* b = hub->claim(t1.ticket);
  REQUIRE(b != nullptr);
  CHECK_FALSE(hub->pending(t1.ticket));
  hub->call_return(b, fake_L(), 0);
  hub->finish_returned(b);
  REQUIRE(p1.done_within(kHang));
  CHECK_FALSE(hub->pending(t1.ticket));
  CHECK(hub->pending(t2.ticket));
  // Ended by cancellation.
  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  CHECK_FALSE(hub->pending(t2.ticket));
  CHECK_FALSE(hub->pending(t3.ticket));
  REQUIRE(p2.done_within(kHang));
  REQUIRE(p3.done_within(kHang));
  CHECK(r1.returned == 1);
  CHECK(r2.ret_cancelled == 1);
  CHECK(r3.ret_cancelled == 1);
}

TEST_CASE("unreg: cancels every queued and parked item of its utilid exactly once",
          "[cancel]") {
  CancelLog::get().reset();
  const int K = 7;
  std::vector<Rec> ff(K);
  Rec q, parked;
  parked.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Producer pp(u, rec_decode, rec_ret, &parked);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 1);
  Wt w(hub.get(), hub->settle(it, 1));
  REQUIRE(w.ticket != 0);
  for (auto& r : ff) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  Producer pq(u, rec_decode, rec_ret, &q);
  REQUIRE(wait_until([&] { return hub->size() == std::size_t(K + 1); }));

  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  REQUIRE(pp.done_within(kHang));
  REQUIRE(pq.done_within(kHang));
  CHECK(pp.rc() == DSS_SUCCESS);
  CHECK(pq.rc() == DSS_SUCCESS);
  CHECK(hub->size() == 0);
  for (auto& r : ff) {
    CHECK(r.decode_cancelled == 1);
    CHECK(r.calls() == 1);
    CHECK(r.utilid == u);
  }
  CHECK(q.decode_cancelled == 1);
  CHECK(q.calls() == 1);
  CHECK(parked.ret_cancelled == 1);
  CHECK(parked.calls() == 2);
  CHECK(hub->claim(w.ticket) == nullptr);
  CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  hub->close();
  CHECK(CancelLog::get().total() == 0);  // nothing left to cancel
  for (auto& r : ff) CHECK(r.calls() == 1);
}

namespace {

// A decoder / return callback that, on cancellation, calls back into the
// hub: this deadlocks if any hub lock were held while callbacks run.
Hub* g_reentrant_hub = nullptr;
void* g_reentrant_other = nullptr;
std::atomic<int> g_reentrant_calls{0};
std::atomic<int> g_reentrant_bad{0};

void reenter() {
  Rec dummy;
  (void)g_reentrant_hub->size();
  int rc = Hub::deliver(g_reentrant_other, rec_decode, nullptr, &dummy);
  if (rc == DSS_SUCCESS) {
    // Running hub: take it back out at once (dummy is on our stack).
    Taken it = g_reentrant_hub->take();
    if (!it || it.data != &dummy) ++g_reentrant_bad;
    if (it) g_reentrant_hub->finish(it);
  }
  (void)g_reentrant_hub->pending(0);
  (void)g_reentrant_hub->claim(0);
  ++g_reentrant_calls;
}

int reentrant_decode(lua_State* L, void*, void*) {
  if (!L) reenter();
  return 1;
}

int reentrant_ret(lua_State* L, void*, void*, int) {
  if (!L) reenter();
  return 0;
}

}  // namespace

TEST_CASE("cancel: callbacks run without the hub's lock held", "[cancel]") {
  CancelLog::get().reset();
  g_reentrant_calls = 0;
  g_reentrant_bad = 0;
  Hub* hub = Hub::create();
  REQUIRE(hub != nullptr);
  g_reentrant_hub = hub;
  void* u = must_reg(hub, libid(0), cancel_hook);
  g_reentrant_other = must_reg(hub, libid(1), cancel_unreg);
  CancelLog::get().hook = [](void* id) {
    reenter();
    Hub::unreg(id);
  };
  int dummy = 0;
  REQUIRE(Hub::deliver(u, reentrant_decode, nullptr, &dummy) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(u, reentrant_decode, nullptr, &dummy) == DSS_SUCCESS);

  // unreg (queued items) and close (queued + parked + client cancels), each
  // on a thread so that a deadlock shows as a failure, not a hang.
  std::atomic<bool> done{false};
  std::thread t1([&] {
    Hub::unreg(u);
    done = true;
  });
  bool ok = wait_until([&] { return done.load(); });
  if (!ok) {
    t1.detach();
    FAIL("unreg deadlocked calling the decoder");
  }
  t1.join();
  CHECK(g_reentrant_calls == 2);

  CHECK(g_reentrant_bad == 0);

  // close: a queued item (decoder), a parked one (ret), then the clients.
  u = must_reg(hub, libid(0), cancel_hook);
  REQUIRE(Hub::deliver(u, reentrant_decode, nullptr, &dummy) == DSS_SUCCESS);
  {
    Producer p(u, reentrant_decode, reentrant_ret, &dummy);
    REQUIRE(wait_until([&] { return hub->size() == 2; }));
    Taken first = must_take(hub);
    Taken blocking = must_take(hub);
    REQUIRE(blocking.blk != nullptr);
    REQUIRE(blocking.blk->ret == reentrant_ret);
    REQUIRE(decode(hub, blocking) == 1);
    Wt w(hub, hub->settle(blocking, 1));
    REQUIRE(w.ticket != 0);
    // Put the fire-and-forget one back in the queue by delivering anew.
    hub->finish(first);
    REQUIRE(Hub::deliver(u, reentrant_decode, nullptr, &dummy) == DSS_SUCCESS);
    REQUIRE(hub->size() == 1);

    done = false;
    std::thread t2([&] {
      hub->close();
      done = true;
    });
    ok = wait_until([&] { return done.load(); });
    if (!ok) {
      t2.detach();
      FAIL("close deadlocked calling a client callback");
    }
    t2.join();
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_SUCCESS);
  }
  // + decoder(NULL) of the queued item, ret(NULL) of the parked one, and
  // u's cancel; the other client's cancel (cancel_unreg) does not reenter.
  CHECK(g_reentrant_calls == 5);
  CHECK(g_reentrant_bad == 0);
  CHECK(CancelLog::get().count(u) == 1);
  CHECK(CancelLog::get().count(g_reentrant_other) == 1);
  hub->unref();
}

// --- close() racing a client's asynchronous unreg --------------------------
//
// A client's cancel may hand the unreg to another thread (its worker) and
// return. Hub::unreg used to remove the id from the process-wide table
// first and only then, under the hub's lock, from the hub's registration
// list; a close() that looked at its list in between found the
// registration still there (now both happen under the hub's lock, and
// the worker waits for it before either). Before commit 05c580f it
// then called the client's cancel again -- once per turn of its loop until
// the worker got the lock (thousands of times; 13-16 of 20 rounds of this
// test). This is the regression test for that.
//
// To hit the window every time, the test briefly holds the hub's private
// mutex while the worker runs (reached through the explicit-instantiation
// access rule, [temp.explicit]/14, which exempts member names there from
// access checking): the worker goes to sleep on the mutex, and cancel
// returns with the worker parked in the window.

namespace {

template <class Tag>
struct Private {
  static typename Tag::type ptr;
};
template <class Tag>
typename Tag::type Private<Tag>::ptr;

template <class Tag, typename Tag::type P>
struct Expose {
  Expose() { Private<Tag>::ptr = P; }
  static Expose instance;
};
template <class Tag, typename Tag::type P>
Expose<Tag, P> Expose<Tag, P>::instance;

struct HubQueue {
  using type = dss::Queue Hub::*;
};
template struct Expose<HubQueue, &Hub::q_>;

std::mutex& mutex_of(Hub* h) { return (h->*Private<HubQueue>::ptr).mu; }

// True when thread tid of this process is asleep (state S in /proc).
bool thread_sleeping(long tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  char buf[512];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* paren = std::strrchr(buf, ')');
  return paren && paren[1] == ' ' && paren[2] == 'S';
}

}  // namespace

TEST_CASE("close: a client whose cancel unregisters from another thread is "
          "cancelled exactly once", "[cancel][close][race]") {
  const int rounds = 20;
  int doubled = 0;
  int max_calls = 0;
  for (int round = 0; round < rounds; ++round) {
    CancelLog::get().reset();
    Hub* hub = Hub::create();
    REQUIRE(hub != nullptr);
    void* u = must_reg(hub, libid(0), cancel_hook);
    std::thread worker;
    std::atomic<long> worker_tid{0};
    std::atomic<bool> worker_in_window{false};
    CancelLog::get().hook = [&](void* id) {
      if (worker.joinable()) return;  // a repeated call: nothing to start
      std::mutex& mu = mutex_of(hub);
      mu.lock();
      worker = std::thread([id, &worker_tid] {
        worker_tid = long(::syscall(SYS_gettid));
        Hub::unreg(id);
      });
      // unreg finds the hub without a lock, then goes to sleep on the
      // hub's mutex in unreg_local (the only lock on its way).
      worker_in_window = wait_until([&] {
        return worker_tid != 0 && thread_sleeping(worker_tid);
      });
      mu.unlock();
    };
    hub->close();
    if (worker.joinable()) worker.join();
    REQUIRE(worker_in_window);
    int calls = CancelLog::get().count(u);
    if (calls != 1) ++doubled;
    if (calls > max_calls) max_calls = calls;
    CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
    hub->unref();
  }
  INFO(doubled << " of " << rounds << " rounds called cancel more than once (at most "
               << max_calls << " times)");
  CHECK(doubled == 0);
}

namespace {

// A decoder whose cancellation (L = NULL) waits at a gate until the test
// opens it.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, open = false;
};

int gated_decode(lua_State* L, void* p, void*) {
  if (L) return 0;
  Gate* g = static_cast<Gate*>(p);
  std::unique_lock<std::mutex> lock(g->mu);
  g->entered = true;
  g->cv.notify_all();
  g->cv.wait(lock, [&] { return g->open; });
  return 0;
}

int noop_ret(lua_State*, void*, void*, int) { return 0; }

}  // namespace

TEST_CASE("unreg: waits for the cancellation a timed-out producer runs on its "
          "own thread", "[cancel][unreg][timeout]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0), cancel_record);
  Gate g;
  // A blocking item nobody takes: its deadline passes and its producer ends
  // it by cancellation on its own thread, held inside the decoder.
  Producer p(u, gated_decode, noop_ret, &g, V2{0, 20});
  {
    std::unique_lock<std::mutex> lock(g.mu);
    REQUIRE(g.cv.wait_for(lock, kHang, [&] { return g.entered; }));
  }
  std::atomic<bool> returned{false};
  std::thread un([&] {
    CHECK(Hub::unreg(u) == DSS_SUCCESS);
    returned = true;
  });
  // The item is no longer queued or parked, so unreg finds nothing to
  // cancel; it must still wait until that callback of its client is done.
  CHECK_FALSE(wait_until([&] { return returned.load(); }, std::chrono::milliseconds(300)));
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.open = true;
    g.cv.notify_all();
  }
  un.join();
  CHECK(returned);
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_ERR_TIMEOUT);
  CHECK(hub->stats().timedout == 1);
}
