// The item lifecycle held by the core (issue 13): unreg against the cancel
// walk and the consumer, unreg against callbacks running on the consumer
// thread, huge timeouts, tickets, coalesced notices, close's CancelCall.
// The consumer is driven exactly as src/lua/module.cpp drives it: take(),
// call_decoder(), settle() (or finish()); claim(), call_return(),
// finish_returned().
#include "helpers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <deque>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <tuple>

using namespace ut;

namespace {

// --- a look inside the hub ---------------------------------------------------
//
// Two private members are read through the explicit-instantiation access
// rule ([temp.explicit]/14: names in an explicit instantiation are not
// access-checked), as test_cancel.cpp does: the queue's blocks (to make
// sure the walk test really relinks a block at a freed block's address) and
// the count of unreg calls waiting in quiesce() (to hold a callback until
// an unreg waits for it). The block list is walked only where no other
// thread changes the queue; the counter is an atomic.

using BlockList = std::vector<const void*>;
BlockList (*g_blocks_of)(Hub*) = nullptr;
int (*g_quiet_waiters_of)(Hub*) = nullptr;

template <auto Q, auto Head>
struct BlocksOf {
  static BlockList get(Hub* h) {
    BlockList v;
    for (auto* b = (h->*Q).*Head; b; b = b->next) v.push_back(b);
    return v;
  }
  BlocksOf() { g_blocks_of = &get; }
  static BlocksOf instance;
};
template <auto Q, auto Head>
BlocksOf<Q, Head> BlocksOf<Q, Head>::instance;
template struct BlocksOf<&Hub::q_, &dss::Queue::qhead_>;

template <auto L, auto M>
struct QuietOf {
  static int get(Hub* h) { return ((h->*L).*M).load(); }
  QuietOf() { g_quiet_waiters_of = &get; }
  static QuietOf instance;
};
template <auto L, auto M>
QuietOf<L, M> QuietOf<L, M>::instance;
template struct QuietOf<&Hub::lua_, &dss::LuaThread::quiet_waiters_>;

BlockList blocks_of(Hub* h) { return g_blocks_of(h); }
// unreg calls of this hub waiting for a callback of theirs to end.
int quiet_waiters(Hub* h) { return g_quiet_waiters_of(h); }

bool contains(const BlockList& v, const void* p) {
  return std::find(v.begin(), v.end(), p) != v.end();
}

// Takes, decodes and settles everything queued, as a dispatch does; returns
// how many items it took.
int drain(Hub* hub) {
  int n = 0;
  while (Taken t = hub->take()) {
    ++n;
    hub->settle(t, hub->call_decoder(t, fake_L()));
  }
  return n;
}

// Spins (yielding) until pred holds or the bound passes: for the start line
// of a race, where a sleep would let the moment go.
template <typename Pred>
bool spin_until(Pred pred, std::chrono::milliseconds bound = kHang) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

// --- 1. unreg's cancel walk resuming across recycled blocks ------------------
//
// unreg kills its client's items under the hub's lock a batch of 64 at a
// time (cancel_items in hub.cpp), calling their decoders (L == NULL) between
// batches without the lock, and then resumes where it stopped: in the same
// block if that one is still linked and is the same block (address and link
// number), else from the front. Here A's cancellation decoder drives the
// consumer from the same thread between batches: it takes and settles B's
// items so that blocks are passed and unlinked, and delivers new B items so
// that a new block is linked at a freed block's address.
//
// The model below follows the queue order and knows which of A's items each
// batch kills (the next 64 that are neither killed nor taken, in queue
// order), so the consumer can take exactly the items in front of the walk's
// resume point; every take is checked against it.

namespace walk {

constexpr int kBatch = 64;  // cancel_items' batch (hub.cpp)

enum class S { live, killed, taken };
struct Item {
  Rec* rec;
  bool a;  // an item of A (the client being unregistered)
  S st;
};

struct Ctx {
  Hub* hub = nullptr;
  void* ua = nullptr;
  void* ub = nullptr;
  // Variant: batch 0's consumer also takes A's items, up to and including
  // order[pass_through], so that it passes the block of the walk's resume
  // point (resume_block): that block is unlinked and relinked at the tail
  // before the next batch.
  bool pass_resume_block = false;
  std::size_t pass_through = 0;
  const void* resume_block = nullptr;

  std::deque<Rec> recs;  // stable addresses
  std::vector<Item> order;
  std::size_t cpos = 0;  // the consumer's position in order
  int phase = 0;         // 0: before unreg, 1: in it, 2: after it returned
  int cancels = 0, batches = 0;
  int mismatches = 0;       // a take that was not the model's next item
  int bad_cancels = 0;      // a cancellation the model did not expect
  int cancels_outside = 0;  // a cancellation outside unreg
  int deliver_failed = 0;
  int a_taken_during = 0;   // A's items the consumer took during unreg
  int a_decoded_after = 0;  // A's decoder with L != NULL after unreg returned
  bool recycled = false;         // a block relinked at a freed block's address
  bool resume_recycled = false;  // ...at resume_block's, in batch 0's drive
  std::set<const void*> freed;   // blocks unlinked so far
};

Ctx* g = nullptr;

int a_decode(lua_State* L, void* p, void* u);

void add(bool a) {
  Ctx& c = *g;
  c.recs.emplace_back();
  Rec& r = c.recs.back();
  r.seq = int(c.order.size());
  c.order.push_back(Item{&r, a, S::live});
  int rc = Hub::deliver(a ? c.ua : c.ub, a ? a_decode : rec_decode, nullptr, &r);
  if (rc != DSS_SUCCESS) ++c.deliver_failed;
}

// Takes the consumer's next item, which must be order[i], and decodes and
// settles it as poll does.
void take_expected(std::size_t i) {
  Ctx& c = *g;
  Taken t = c.hub->take();
  if (!t) {
    ++c.mismatches;
    return;
  }
  if (t.data != c.order[i].rec) ++c.mismatches;
  Item& got = c.order[std::size_t(static_cast<Rec*>(t.data)->seq)];
  got.st = S::taken;
  if (got.a && c.phase == 1) ++c.a_taken_during;
  c.hub->settle(t, c.hub->call_decoder(t, fake_L()));
}

// Takes every live item up to the next live item of A (that one is the
// walk's: the next batch kills it).
void take_up_to_next_a() {
  Ctx& c = *g;
  for (; c.cpos < c.order.size(); ++c.cpos) {
    const Item& x = c.order[c.cpos];
    if (x.st != S::live) continue;
    if (x.a) break;
    take_expected(c.cpos);
  }
}

// The consumer's turn between two batches of the walk.
void drive(bool first_batch) {
  Ctx& c = *g;
  BlockList before = blocks_of(c.hub);
  if (first_batch && c.pass_resume_block) {
    for (; c.cpos <= c.pass_through; ++c.cpos)
      if (c.order[c.cpos].st == S::live) take_expected(c.cpos);
  }
  take_up_to_next_a();
  BlockList mid = blocks_of(c.hub);
  for (const void* b : before)
    if (!contains(mid, b)) c.freed.insert(b);
  // A block's worth of new items: at least one new block is linked.
  for (std::uint32_t i = 0; i < Hub::kEntries; ++i) add(false);
  for (const void* b : blocks_of(c.hub)) {
    if (contains(mid, b) || !c.freed.count(b)) continue;
    c.recycled = true;
    if (first_batch && b == c.resume_block) c.resume_recycled = true;
  }
}

void on_cancel(Rec* r) {
  Ctx& c = *g;
  if (c.phase != 1) {
    ++c.cancels_outside;
    return;
  }
  int k = c.cancels++;
  bool first_of_batch = k % kBatch == 0;
  if (first_of_batch) {
    // The batch this call opens: the next 64 live items of A.
    ++c.batches;
    int n = 0;
    for (Item& x : c.order) {
      if (n == kBatch) break;
      if (x.a && x.st == S::live) {
        x.st = S::killed;
        ++n;
      }
    }
  }
  const Item& me = c.order[std::size_t(r->seq)];
  if (!me.a || me.st != S::killed) ++c.bad_cancels;
  if (first_of_batch) drive(c.batches == 1);
}

int a_decode(lua_State* L, void* p, void* u) {
  Rec* r = static_cast<Rec*>(p);
  r->utilid = u;
  if (!L) {
    ++r->decode_cancelled;
    on_cancel(r);
    return 0;
  }
  ++r->decoded;
  if (g->phase == 2) ++g->a_decoded_after;
  return 0;
}

}  // namespace walk

TEST_CASE("unreg: the cancel walk resumes correctly while the consumer passes, "
          "frees and relinks blocks between its batches",
          "[lifecycle][cancel][walk]") {
  // false: the consumer takes only B's items (every item of A is cancelled);
  // true: in the first pause it also takes A's items past the walk's resume
  // point, so the resume block itself is unlinked and a new block is linked
  // at its address: the walk must not resume in that new block.
  const bool pass_resume_block = GENERATE(false, true);
  INFO("pass_resume_block " << pass_resume_block);
  CancelLog::get().reset();
  HubHandle hub;
  walk::Ctx c;
  walk::g = &c;
  c.hub = hub.get();
  c.ua = must_reg(hub.get(), libid(0));
  c.ub = must_reg(hub.get(), libid(1));
  c.pass_resume_block = pass_resume_block;
  const std::size_t E = Hub::kEntries;

  // Block 0: B, then A's first items (64, or 100: the first batch's resume
  // point is then in block 0), then B up to and including block 1's first
  // entry. The consumer takes the first item now, which reserves exactly
  // these E + 1 entries: its next pass over the end of that reservation
  // unlinks block 0.
  const std::size_t first_a = pass_resume_block ? 100 : 64;
  walk::add(false);
  for (std::size_t i = 0; i < first_a; ++i) walk::add(true);
  while (c.order.size() < E + 1) walk::add(false);
  walk::take_expected(0);
  c.cpos = 1;
  c.resume_block = blocks_of(hub.get())[0];
  c.pass_through = E;
  // Then up to 5 full blocks, every third item A's.
  while (c.order.size() < 5 * E) walk::add(c.order.size() % 3 == 0);
  REQUIRE(blocks_of(hub.get()).size() == 5);
  REQUIRE(c.deliver_failed == 0);
  int a_total = 0;
  for (const walk::Item& x : c.order) a_total += x.a;
  REQUIRE(a_total > 4 * walk::kBatch);

  c.phase = 1;
  int rc = Hub::unreg(c.ua);
  c.phase = 2;
  CHECK(rc == DSS_SUCCESS);

  CHECK(c.mismatches == 0);
  CHECK(c.bad_cancels == 0);
  CHECK(c.cancels_outside == 0);
  CHECK(c.deliver_failed == 0);
  CHECK(c.recycled);  // the scenario happened: a block relinked at a freed address
  if (pass_resume_block) {
    CHECK(c.resume_recycled);
    CHECK(c.a_taken_during == int(first_a) - walk::kBatch);
  } else {
    CHECK(c.a_taken_during == 0);
  }
  // Every item of A ended exactly once before unreg returned: cancelled,
  // or (only in the variant) taken and decoded by the consumer.
  int cancelled = 0, wrong = 0;
  for (const walk::Item& x : c.order) {
    if (!x.a) continue;
    const Rec& r = *x.rec;
    bool ok = x.st == walk::S::taken ? r.decoded == 1 && r.decode_cancelled == 0
                                     : r.decoded == 0 && r.decode_cancelled == 1;
    if (!ok || r.utilid != c.ua) ++wrong;
    cancelled += r.decode_cancelled;
  }
  CHECK(wrong == 0);
  CHECK(cancelled == a_total - c.a_taken_during);
  CHECK(c.batches == (cancelled + walk::kBatch - 1) / walk::kBatch);
  CHECK(hub->stats().cancelled == std::uint64_t(cancelled));

  // After unreg returned, nothing of A is taken: the rest is B's, in order.
  for (; c.cpos < c.order.size(); ++c.cpos)
    if (c.order[c.cpos].st == walk::S::live) walk::take_expected(c.cpos);
  CHECK_FALSE(hub->take());
  CHECK(c.mismatches == 0);
  CHECK(c.a_decoded_after == 0);
  CHECK(hub->size() == 0);
  int b_wrong = 0;
  for (const walk::Item& x : c.order)
    if (!x.a && (x.rec->decoded != 1 || x.rec->decode_cancelled != 0)) ++b_wrong;
  CHECK(b_wrong == 0);
  CHECK(CancelLog::get().total() == 0);
  walk::g = nullptr;
}

// --- 2. unreg waits for its client's callback on the consumer thread ---------

namespace {

// A client whose decoder and return callback can hold (bounded) until an
// unreg waits for them, or unregister their own client from inside.
// Events are numbered from one counter, to check their order.
struct Probe {
  Hub* hub = nullptr;
  void* self = nullptr;
  std::atomic<int>* seq = nullptr;
  int decode_result = 0;
  int wait_in = 0;   // 1: the decoder, 2: the return callback holds until
                     // an unreg of this hub waits in quiesce()
  int unreg_in = 0;  // 1: the decoder, 2: the return callback calls unreg(self)
  std::atomic<bool> in_decoder{false}, in_ret{false};
  std::atomic<bool> saw_unreg_waiting{false};
  std::atomic<int> ev_end{0};     // the decoder or return callback returns
  std::atomic<int> ev_cancel{0};  // a cancellation callback ran
  std::atomic<int> decoded{0}, returned{0}, decode_cancelled{0}, ret_cancelled{0};
  std::atomic<int> unreg_rc{0};

  void hold(int where) {
    if (wait_in == where)
      saw_unreg_waiting = wait_until([this] { return quiet_waiters(hub) > 0; });
    if (unreg_in == where) unreg_rc = Hub::unreg(self);
    ev_end = ++*seq;
  }
};

int probe_decode(lua_State* L, void* p, void*) {
  Probe* q = static_cast<Probe*>(p);
  if (!L) {
    ++q->decode_cancelled;
    q->ev_cancel = ++*q->seq;
    return 0;
  }
  ++q->decoded;
  q->in_decoder = true;
  q->hold(1);
  return q->decode_result;
}

int probe_ret(lua_State* L, void* p, void*, int) {
  Probe* q = static_cast<Probe*>(p);
  if (!L) {
    ++q->ret_cancelled;
    q->ev_cancel = ++*q->seq;
    return 0;
  }
  ++q->returned;
  q->in_ret = true;
  q->hold(2);
  return 0;
}

// Joins t within the bound; otherwise releases what it may wait for
// (close) and lets it go. False when it did not finish in time.
bool join_within(std::thread& t, std::atomic<bool>& done, Hub* hub) {
  bool ok = wait_until([&] { return done.load(); });
  if (!ok) {
    hub->close();
    ok = wait_until([&] { return done.load(); });
  }
  if (ok) t.join();
  else t.detach();
  return ok;
}

}  // namespace

TEST_CASE("unreg: waits for a decoder of its client running on the consumer "
          "thread, and for the item's settle() or finish()",
          "[lifecycle][unreg][quiesce]") {
  // 0: blocking, the decoder returns 1 (settle cannot park it: its
  //    registration is gone; it ends it by cancellation, ret(NULL));
  // 1: blocking, the decoder returns 0 (settle ends it);
  // 2: blocking, the decoder "raises" (finish ends it);
  // 3: fire and forget, the decoder returns 0.
  const int mode = GENERATE(0, 1, 2, 3);
  INFO("mode " << mode);
  const bool blocking = mode != 3;
  HubHandle hub;
  void* ua = must_reg(hub.get(), libid(0));
  std::atomic<int> seq{0};
  Probe q;
  q.hub = hub.get();
  q.seq = &seq;
  q.wait_in = 1;
  q.decode_result = mode == 0 ? 1 : 0;
  std::unique_ptr<Producer> prod;
  if (blocking) {
    prod = std::make_unique<Producer>(ua, probe_decode, probe_ret, &q,
                                      V2{0, DSS_TIMEOUT_INFINITE});
  } else {
    REQUIRE(Hub::deliver(ua, probe_decode, nullptr, &q) == DSS_SUCCESS);
  }
  REQUIRE(wait_until([&] { return hub->size() == 1; }));

  std::atomic<bool> consumer_done{false};
  std::atomic<int> ev_ended{0};
  std::atomic<bool> took{false};
  std::atomic<TicketId> ticket{~TicketId(0)};
  std::thread consumer([&] {
    Taken t = hub->take();
    if (t) {
      took = true;
      int n = hub->call_decoder(t, fake_L());
      if (mode == 2) hub->finish(t);
      else ticket = hub->settle(t, n);
      ev_ended = ++seq;
    }
    consumer_done = true;
  });
  bool entered = wait_until([&] { return q.in_decoder.load() || consumer_done.load(); });

  std::atomic<bool> unreg_done{false};
  std::atomic<int> ev_unreg_call{0}, ev_unreg_ret{0}, unreg_rc{0};
  std::thread unregger([&] {
    ev_unreg_call = ++seq;
    unreg_rc = Hub::unreg(ua);
    ev_unreg_ret = ++seq;
    unreg_done = true;
  });
  bool consumer_ok = join_within(consumer, consumer_done, hub.get());
  bool unreg_ok = join_within(unregger, unreg_done, hub.get());
  REQUIRE(entered);
  REQUIRE(consumer_ok);
  REQUIRE(unreg_ok);
  CHECK(took);
  CHECK(q.saw_unreg_waiting);
  CHECK(unreg_rc == DSS_SUCCESS);
  INFO("unreg called " << ev_unreg_call << ", decoder returned " << q.ev_end
                       << ", cancelled " << q.ev_cancel << ", item ended (seen by the consumer) "
                       << ev_ended << ", unreg returned " << ev_unreg_ret);
  CHECK(ev_unreg_call < q.ev_end);
  CHECK(q.ev_end < ev_unreg_ret);  // unreg did not return before the decoder did
  CHECK(q.decoded == 1);
  CHECK(q.decode_cancelled == 0);  // the taken item is not unreg's to cancel
  CHECK(q.returned == 0);
  if (mode == 0) {
    // settle() ended it by cancellation, and unreg returned after that.
    CHECK(ticket == 0);
    CHECK(q.ret_cancelled == 1);
    CHECK(q.ev_end < q.ev_cancel);
    CHECK(q.ev_cancel < ev_unreg_ret);
  } else {
    CHECK(q.ret_cancelled == 0);
    if (mode != 2) CHECK(ticket == 0);
  }
  if (blocking) {
    REQUIRE(prod->done_within(kHang));
    CHECK(prod->rc() == (mode == 0 ? DSS_ERR_CANCELLED : DSS_SUCCESS));
  }
  CHECK(hub->size() == 0);
}

TEST_CASE("unreg: waits for a return callback of its client running on the "
          "consumer thread (claim, call_return, finish_returned)",
          "[lifecycle][unreg][quiesce]") {
  const int garbage = GENERATE(0, 1);  // wt_call, or wt_gc
  HubHandle hub;
  void* ua = must_reg(hub.get(), libid(0));
  std::atomic<int> seq{0};
  Probe q;
  q.hub = hub.get();
  q.seq = &seq;
  q.wait_in = 2;
  q.decode_result = 1;
  Producer prod(ua, probe_decode, probe_ret, &q, V2{0, DSS_TIMEOUT_INFINITE});
  REQUIRE(wait_until([&] { return hub->size() == 1; }));

  std::atomic<bool> consumer_done{false}, claimed{false};
  std::atomic<TicketId> ticket{0};
  std::atomic<int> ev_finished{0};
  std::thread consumer([&] {
    Taken t = hub->take();
    if (t) {
      TicketId tk = hub->settle(t, hub->call_decoder(t, fake_L()));
      ticket = tk;
      if (Blocking* b = hub->claim(tk)) {
        claimed = true;
        hub->call_return(b, fake_L(), garbage);
        hub->finish_returned(b);
        ev_finished = ++seq;
      }
    }
    consumer_done = true;
  });
  bool entered = wait_until([&] { return q.in_ret.load() || consumer_done.load(); });
  std::atomic<bool> unreg_done{false};
  std::atomic<int> ev_unreg_call{0}, ev_unreg_ret{0}, unreg_rc{0};
  std::thread unregger([&] {
    ev_unreg_call = ++seq;
    unreg_rc = Hub::unreg(ua);
    ev_unreg_ret = ++seq;
    unreg_done = true;
  });
  bool consumer_ok = join_within(consumer, consumer_done, hub.get());
  bool unreg_ok = join_within(unregger, unreg_done, hub.get());
  REQUIRE(entered);
  REQUIRE(consumer_ok);
  REQUIRE(unreg_ok);
  CHECK(ticket != 0);
  CHECK(claimed);
  CHECK(q.saw_unreg_waiting);
  CHECK(unreg_rc == DSS_SUCCESS);
  INFO("unreg called " << ev_unreg_call << ", return callback returned " << q.ev_end
                       << ", unreg returned " << ev_unreg_ret);
  CHECK(ev_unreg_call < q.ev_end);
  CHECK(q.ev_end < ev_unreg_ret);
  // Claimed before unreg: answered, not cancelled.
  CHECK(q.returned == 1);
  CHECK(q.ret_cancelled == 0);
  CHECK(q.decode_cancelled == 0);
  REQUIRE(prod.done_within(kHang));
  CHECK(prod.rc() == DSS_SUCCESS);
  CHECK_FALSE(hub->pending(ticket));
}

TEST_CASE("unreg: called from inside its own client's decoder or return callback "
          "on the consumer thread, it does not wait for itself",
          "[lifecycle][unreg][quiesce]") {
  const int where = GENERATE(1, 2);  // the decoder, the return callback
  INFO("where " << where);
  HubHandle hub;
  void* ua = must_reg(hub.get(), libid(0));
  void* ub = must_reg(hub.get(), libid(1));
  std::atomic<int> seq{0};
  Probe q;
  q.hub = hub.get();
  q.self = ua;
  q.seq = &seq;
  q.unreg_in = where;
  q.decode_result = 1;
  Rec other_a, other_b;
  Producer prod(ua, probe_decode, probe_ret, &q, V2{0, DSS_TIMEOUT_INFINITE});
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  REQUIRE(Hub::deliver(ua, rec_decode, nullptr, &other_a) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &other_b) == DSS_SUCCESS);

  std::atomic<bool> done{false};
  std::atomic<TicketId> ticket{~TicketId(0)};
  std::atomic<bool> claimed{false};
  std::thread consumer([&] {
    hub->drain_enter();
    Taken t = hub->take();
    if (t) {
      TicketId tk = hub->settle(t, hub->call_decoder(t, fake_L()));
      ticket = tk;
      if (Blocking* b = hub->claim(tk)) {
        claimed = true;
        hub->call_return(b, fake_L(), 0);
        hub->finish_returned(b);
      }
    }
    hub->drain_leave();
    done = true;
  });
  bool ok = join_within(consumer, done, hub.get());
  if (!ok) FAIL("unreg from inside its own client's callback deadlocked");
  CHECK(q.unreg_rc == DSS_SUCCESS);
  CHECK(Hub::unreg(ua) == DSS_ERR_INVALID_UTILID);
  CHECK(other_a.decode_cancelled == 1);  // cancelled by the nested unreg
  CHECK(other_a.calls() == 1);
  CHECK(other_b.calls() == 0);  // another client's item is untouched
  CHECK(hub->size() == 1);
  CHECK(q.decoded == 1);
  CHECK(q.decode_cancelled == 0);
  REQUIRE(prod.done_within(kHang));
  if (where == 1) {
    // Unregistered while decoding: settle ends it by cancellation.
    CHECK(ticket == 0);
    CHECK_FALSE(claimed);
    CHECK(q.ret_cancelled == 1);
    CHECK(q.returned == 0);
    CHECK(prod.rc() == DSS_ERR_CANCELLED);
  } else {
    CHECK(ticket != 0);
    CHECK(claimed);
    CHECK(q.returned == 1);
    CHECK(q.ret_cancelled == 0);
    CHECK(prod.rc() == DSS_SUCCESS);
  }
  CHECK(drain(hub.get()) == 1);
  CHECK(other_b.decoded == 1);
}

namespace {

// A decoder during which the Lua side ends another item: what happens when
// the decoder's own allocations (lua_pushstring...) run a garbage
// collection step and it finalizes an uncalled waiting-thread callback
// (wt_gc: claim, call_return with garbage 1, finish_returned) -- or when the
// decoder calls into Lua and that polls. The decoder is still running
// afterwards, so an unreg of its client must still wait for it.
struct NestedEnd {
  Hub* hub = nullptr;
  TicketId other = 0;  // a parked item of another client
  std::atomic<bool>* unreg_returned = nullptr;
  std::atomic<int>* seq = nullptr;
  std::atomic<bool> ended_other{false};
  std::atomic<bool> saw_unreg_waiting{false};
  std::atomic<int> ev_end{0};
};

int nested_end_decode(lua_State* L, void* p, void*) {
  NestedEnd* q = static_cast<NestedEnd*>(p);
  if (!L) return 0;
  q->ended_other = answer(q->hub, q->other, 1);  // as wt_gc
  // Held (bounded) until an unreg of our client waits for us -- or, on a
  // core that does not wait, has returned already.
  q->saw_unreg_waiting = wait_until([q] {
    return quiet_waiters(q->hub) > 0 || q->unreg_returned->load();
  }) && !q->unreg_returned->load();
  q->ev_end = ++*q->seq;
  return 0;
}

}  // namespace

TEST_CASE("unreg: still waits for a decoder of its client after the Lua side "
          "ended another item from inside it (a finalizer run by the "
          "decoder's allocation)",
          "[lifecycle][unreg][quiesce]") {
  // A regression test: the core once kept one "in flight" registration,
  // and the nested finish_returned() cleared it while the outer decoder
  // still ran. The in-flight ids now nest, one per level.
  HubHandle hub;
  void* ua = must_reg(hub.get(), libid(0));
  void* ub = must_reg(hub.get(), libid(1));
  std::atomic<int> seq{0};
  std::atomic<bool> unreg_returned{false};
  NestedEnd q;
  q.hub = hub.get();
  q.seq = &seq;
  q.unreg_returned = &unreg_returned;
  Rec other;
  other.decode_result = 1;
  Producer prod(ub, rec_decode, rec_ret, &other);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  REQUIRE(Hub::deliver(ua, nested_end_decode, nullptr, &q) == DSS_SUCCESS);

  std::atomic<bool> consumer_done{false};
  std::thread consumer([&] {
    Taken t = hub->take();  // other's item: parked
    if (t) q.other = hub->settle(t, hub->call_decoder(t, fake_L()));
    t = hub->take();  // ours
    if (t) hub->settle(t, hub->call_decoder(t, fake_L()));
    consumer_done = true;
  });
  bool entered = wait_until([&] { return q.ended_other.load() || consumer_done.load(); });
  std::atomic<bool> unreg_done{false};
  std::atomic<int> ev_unreg_ret{0}, unreg_rc{0};
  std::thread unregger([&] {
    unreg_rc = Hub::unreg(ua);
    ev_unreg_ret = ++seq;
    unreg_returned = true;
    unreg_done = true;
  });
  bool consumer_ok = join_within(consumer, consumer_done, hub.get());
  bool unreg_ok = join_within(unregger, unreg_done, hub.get());
  REQUIRE(entered);
  REQUIRE(consumer_ok);
  REQUIRE(unreg_ok);
  CHECK(q.other != 0);
  CHECK(q.ended_other);
  REQUIRE(prod.done_within(kHang));
  CHECK(other.collected == 1);
  CHECK(unreg_rc == DSS_SUCCESS);
  INFO("decoder returned " << q.ev_end << ", unreg returned " << ev_unreg_ret);
  CHECK(q.saw_unreg_waiting);
  CHECK(q.ev_end < ev_unreg_ret);  // unreg did not return before the decoder did
}

// --- 3. huge timeouts ----------------------------------------------------------

namespace {

constexpr bool kLongHoldsPastMax = LONG_MAX > DSS_TIMEOUT_MAX_MS;

}  // namespace

TEST_CASE("timeouts: a blocking producer with no limit (negative, or past "
          "DSS_TIMEOUT_MAX_MS), or with the largest limit, waits until answered",
          "[lifecycle][timeout]") {
  std::vector<long> values = {-1L, -2L, LONG_MIN};
  if (kLongHoldsPastMax) {
    values.push_back(LONG_MAX);
    values.push_back(long(DSS_TIMEOUT_MAX_MS + 1));
    values.push_back(long(DSS_TIMEOUT_MAX_MS));  // a limit: 100 years away
  }
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  for (long timeout : values) {
    INFO("timeout_ms " << timeout);
    Rec r;
    r.decode_result = 1;
    Producer p(u, rec_decode, rec_ret, &r, V2{0, timeout});
    REQUIRE(wait_until([&] { return hub->size() == 1 || p.done(); }));
    CHECK_FALSE(p.done_within(kQuiet));  // queued: still waiting
    Taken it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 1);
    Wt w(hub.get(), hub->settle(it, 1));
    REQUIRE(w.ticket != 0);
    CHECK_FALSE(p.done_within(kQuiet));  // parked: still waiting
    CHECK(hub->pending(w.ticket));
    REQUIRE(answer(w));
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_SUCCESS);
    CHECK(r.decoded == 1);
    CHECK(r.returned == 1);
    CHECK(r.calls() == 2);
    CHECK(r.bad_args == 0);
    // Fire and forget with the same timeout: queued at once.
    Rec f;
    CHECK(Hub::deliver2(u, rec_decode, nullptr, &f, 0, timeout) == DSS_SUCCESS);
    CHECK(drain(hub.get()) == 1);
    CHECK(f.decoded == 1);
  }
  dss::Stats s = hub->stats();
  CHECK(s.timedout == 0);
  CHECK(s.rejected == 0);
  CHECK(s.blocked == 0);
}

TEST_CASE("timeouts: small limits and 0 end an unanswered blocking item with "
          "TIMEOUT, by cancellation on the producer's thread",
          "[lifecycle][timeout]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::uint64_t n = 0;
  for (long timeout : {0L, 1L, 30L}) {
    INFO("timeout_ms " << timeout);
    Rec r;
    Producer p(u, rec_decode, rec_ret, &r, V2{0, timeout});
    REQUIRE(p.done_within(kHang));  // nobody takes it
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
    CHECK(r.decode_cancelled == 1);
    CHECK(r.calls() == 1);
    CHECK(hub->size() == 0);
    CHECK_FALSE(hub->take());
    CHECK(hub->stats().timedout == ++n);
  }
  // Fire and forget with timeout 0 in a queue with room: queued.
  Rec f;
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &f, 0, 0) == DSS_SUCCESS);
  CHECK(drain(hub.get()) == 1);
}

TEST_CASE("timeouts: waits for room in a full bounded queue with a huge timeout "
          "wait, they do not fail",
          "[lifecycle][timeout][maxqueue]") {
  std::vector<long> values = {-1L, LONG_MIN};
  if (kLongHoldsPastMax) {
    values.push_back(LONG_MAX);
    values.push_back(long(DSS_TIMEOUT_MAX_MS + 1));
    values.push_back(long(DSS_TIMEOUT_MAX_MS));
  }
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  hub->set_max(1);
  for (long timeout : values) {
    INFO("timeout_ms " << timeout);
    Rec first, waiting, blocking;
    blocking.decode_result = 1;
    REQUIRE(Hub::deliver(u, rec_decode, nullptr, &first) == DSS_SUCCESS);
    {
      // Fire and forget.
      Producer p(u, rec_decode, nullptr, &waiting, V2{0, timeout});
      REQUIRE(wait_until([&] { return hub->stats().blocked == 1 || p.done(); }));
      CHECK_FALSE(p.done_within(kQuiet));
      Taken it = must_take(hub.get());  // as poll: the room is handed out at its end
      hub->drain_enter();
      CHECK(it.data == &first);
      hub->settle(it, decode(hub.get(), it));
      hub->drain_leave();
      REQUIRE(p.done_within(kHang));
      CHECK(p.rc() == DSS_SUCCESS);
      CHECK(hub->size() == 1);
    }
    {
      // Blocking: waits for room, then for its answer.
      Producer p(u, rec_decode, rec_ret, &blocking, V2{0, timeout});
      REQUIRE(wait_until([&] { return hub->stats().blocked == 1 || p.done(); }));
      CHECK_FALSE(p.done_within(kQuiet));
      Taken it = must_take(hub.get());
      hub->drain_enter();
      CHECK(it.data == &waiting);
      hub->settle(it, decode(hub.get(), it));
      hub->drain_leave();
      REQUIRE(wait_until([&] { return hub->size() == 1 || p.done(); }));
      CHECK_FALSE(p.done_within(kQuiet));
      it = must_take(hub.get());
      REQUIRE(it.data == &blocking);
      Wt w(hub.get(), hub->settle(it, decode(hub.get(), it)));
      REQUIRE(w.ticket != 0);
      REQUIRE(answer(w));
      REQUIRE(p.done_within(kHang));
      CHECK(p.rc() == DSS_SUCCESS);
    }
    CHECK(waiting.decoded == 1);
    CHECK(blocking.returned == 1);
    CHECK(hub->size() == 0);
  }
  dss::Stats s = hub->stats();
  CHECK(s.rejected == 0);
  CHECK(s.timedout == 0);
  CHECK(s.blocked == 0);
}

TEST_CASE("timeouts: wait() with no limit or a huge one sleeps until a delivery",
          "[lifecycle][timeout][wait]") {
  const double s = GENERATE(-1.0, double(INFINITY), 1e300,
                            double(dss::kTimeoutMaxMs) / 1000,
                            double(dss::kTimeoutMaxMs) / 1000 + 1);
  INFO("timeout_s " << s);
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::atomic<long> got{-1};
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    got = long(hub->wait(s));
    done = true;
  });
  bool quiet = !wait_until([&] { return done.load(); }, kQuiet);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  bool ok = join_within(waiter, done, hub.get());
  CHECK(quiet);
  CHECK(ok);
  CHECK(got == 1);
}

// --- 4. tickets ---------------------------------------------------------------

namespace {

// A blocking item parked on the Lua side: its producer thread, its record,
// its ticket.
struct Parked {
  Rec r;
  std::unique_ptr<Producer> p;
  TicketId t = 0;
};

// Queues a blocking item of u (expecting the queue empty before), takes it,
// decodes it to 1 and settles it: parked.
std::unique_ptr<Parked> park_one(Hub* hub, void* u, long timeout = DSS_TIMEOUT_INFINITE) {
  auto x = std::make_unique<Parked>();
  x->r.decode_result = 1;
  x->p = std::make_unique<Producer>(u, rec_decode, rec_ret, &x->r, V2{0, timeout});
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub);
  REQUIRE(it.data == &x->r);
  x->t = hub->settle(it, decode(hub, it));
  REQUIRE(x->t != 0);
  return x;
}

// A ticket is a slot of the hub's ticket table (index + 1, low 32 bits) and
// the slot's generation (high 32 bits): see ticket_put_locked in hub.cpp.
std::uint32_t slot_of(TicketId t) { return std::uint32_t(t); }
std::uint32_t gen_of(TicketId t) { return std::uint32_t(t >> 32); }
TicketId ticket(std::uint32_t gen, std::uint32_t slot) {
  return (TicketId(gen) << 32) | slot;
}

}  // namespace

TEST_CASE("tickets: stale after the answer, the cancellation, the timeout; "
          "claim() misses and pending() is false",
          "[lifecycle][tickets]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));

  // Answered.
  auto a = park_one(hub.get(), u);
  CHECK(hub->pending(a->t));
  REQUIRE(answer(hub.get(), a->t));
  REQUIRE(a->p->done_within(kHang));
  CHECK(a->p->rc() == DSS_SUCCESS);
  CHECK(hub->claim(a->t) == nullptr);
  CHECK_FALSE(hub->pending(a->t));
  CHECK_FALSE(answer(hub.get(), a->t, 1));
  CHECK(a->r.calls() == 2);

  // Timed out while parked (the item must be taken before its deadline:
  // should this thread lose that race, it ends queued, and the next round
  // gives it more time).
  bool parked = false;
  for (long timeout : {300L, 3000L, 15000L}) {
    Rec r;
    r.decode_result = 1;
    Producer p(u, rec_decode, rec_ret, &r, V2{0, timeout});
    REQUIRE(wait_until([&] { return hub->size() == 1 || p.done(); }));
    Taken it = hub->take();
    if (!it) {
      REQUIRE(p.done_within(kHang));
      continue;
    }
    TicketId t = hub->settle(it, decode(hub.get(), it));
    REQUIRE(t != 0);
    REQUIRE(p.done_within(kHang));  // nobody answers
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
    CHECK(r.ret_cancelled == 1);
    CHECK(hub->claim(t) == nullptr);
    CHECK_FALSE(hub->pending(t));
    CHECK_FALSE(answer(hub.get(), t));
    CHECK(r.calls() == 2);
    parked = true;
    break;
  }
  CHECK(parked);

  // Cancelled by unreg, and by close.
  auto b = park_one(hub.get(), u);
  REQUIRE(Hub::unreg(u) == DSS_SUCCESS);
  REQUIRE(b->p->done_within(kHang));
  CHECK(b->p->rc() == DSS_ERR_CANCELLED);
  CHECK(hub->claim(b->t) == nullptr);
  CHECK_FALSE(hub->pending(b->t));
  void* v = must_reg(hub.get(), libid(1));
  auto c = park_one(hub.get(), v);
  hub->close();
  REQUIRE(c->p->done_within(kHang));
  CHECK(c->p->rc() == DSS_ERR_CANCELLED);
  CHECK(hub->claim(c->t) == nullptr);
  CHECK_FALSE(hub->pending(c->t));
  CHECK(b->r.ret_cancelled == 1);
  CHECK(c->r.ret_cancelled == 1);
  CHECK(hub->claim(0) == nullptr);
}

TEST_CASE("tickets: garbage ids (0, random, index out of range, wrong "
          "generation) miss, never crash, and leave the parked items alone",
          "[lifecycle][tickets]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::vector<std::unique_ptr<Parked>> live;
  for (int i = 0; i < 3; ++i) live.push_back(park_one(hub.get(), u));
  std::set<TicketId> valid;
  for (auto& x : live) valid.insert(x->t);
  REQUIRE(valid.size() == 3);
  std::uint32_t max_slot = 0;
  for (TicketId t : valid) max_slot = std::max(max_slot, slot_of(t));

  std::vector<TicketId> garbage = {0, ~TicketId(0), TicketId(1) << 63,
                                   ticket(0, 0), ticket(1, 0),
                                   ticket(1, max_slot + 1), ticket(1, max_slot + 1000),
                                   ticket(1, 0xffffffffu), ticket(0xffffffffu, 0xffffffffu)};
  for (TicketId t : valid) {
    garbage.push_back(ticket(gen_of(t) + 1, slot_of(t)));  // wrong generation
    garbage.push_back(ticket(gen_of(t) - 1, slot_of(t)));
    garbage.push_back(ticket(0, slot_of(t)));
    garbage.push_back(ticket(gen_of(t) ^ 0x80000000u, slot_of(t)));
    garbage.push_back(t ^ (TicketId(1) << 63));
  }
  std::mt19937_64 rng(0x5d55d55d);
  for (int i = 0; i < 20000; ++i) garbage.push_back(rng());
  for (int i = 0; i < 2000; ++i)  // small slot numbers, random generations
    garbage.push_back(ticket(std::uint32_t(rng()), std::uint32_t(rng() % (max_slot + 2))));
  int hits = 0, pend = 0, tried = 0;
  for (TicketId t : garbage) {
    if (valid.count(t)) continue;
    ++tried;
    if (hub->pending(t)) ++pend;
    if (Blocking* b = hub->claim(t)) {
      ++hits;
      // Put it back in the Lua side's hands the only way there is: answer it.
      hub->call_return(b, fake_L(), 1);
      hub->finish_returned(b);
    }
  }
  CHECK(tried > 20000);
  CHECK(hits == 0);
  CHECK(pend == 0);
  // The parked items are untouched: still pending, producers still blocked.
  for (auto& x : live) {
    CHECK(hub->pending(x->t));
    CHECK(x->r.calls() == 1);
    CHECK_FALSE(x->p->done());
  }
  for (auto& x : live) {
    REQUIRE(answer(hub.get(), x->t));
    REQUIRE(x->p->done_within(kHang));
    CHECK(x->p->rc() == DSS_SUCCESS);
    CHECK(x->r.returned == 1);
  }
  // On a closed hub too.
  hub->close();
  int closed_hits = 0;
  for (TicketId t : garbage) closed_hits += hub->claim(t) != nullptr || hub->pending(t);
  for (auto& x : live) closed_hits += hub->claim(x->t) != nullptr || hub->pending(x->t);
  CHECK(closed_hits == 0);
}

TEST_CASE("tickets: a slot reused for a new item has a new generation; the old "
          "ticket misses the new item",
          "[lifecycle][tickets]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::set<TicketId> seen;
  auto prev = park_one(hub.get(), u);
  seen.insert(prev->t);
  REQUIRE(answer(hub.get(), prev->t));
  REQUIRE(prev->p->done_within(kHang));
  int reused = 0, old_hits = 0, repeats = 0;
  for (int i = 0; i < 50; ++i) {
    auto cur = park_one(hub.get(), u);
    if (!seen.insert(cur->t).second) ++repeats;
    if (slot_of(cur->t) == slot_of(prev->t)) ++reused;
    // Every earlier ticket misses the item now in their slot.
    for (TicketId t : seen) {
      if (t == cur->t) continue;
      if (hub->pending(t)) ++old_hits;
      if (hub->claim(t) != nullptr) ++old_hits;
    }
    CHECK(hub->pending(cur->t));
    CHECK(cur->r.calls() == 1);
    REQUIRE(answer(hub.get(), cur->t));
    REQUIRE(cur->p->done_within(kHang));
    CHECK(cur->p->rc() == DSS_SUCCESS);
    CHECK(cur->r.returned == 1);
    prev = std::move(cur);
  }
  CHECK(reused == 50);  // one item at a time: the same slot every time
  CHECK(repeats == 0);
  CHECK(old_hits == 0);
}

// --- 5. coalesced notices are never lost ----------------------------------------

TEST_CASE("coalesce: after unreg kills the last queued items while the consumer "
          "takes the others, the next delivery still sends its datagram and "
          "makes the fd readable",
          "[lifecycle][udp][coalesce][race]") {
  // look: the consumer takes until it finds the queue empty; otherwise it
  // takes exactly B's items and does not look again (the kills may then
  // leave the queue empty behind its back).
  const bool look = GENERATE(true, false);
  INFO("look " << look);
  const int kIterations = 2500;
  HubHandle hub;
  void* ub = must_reg(hub.get(), libid(1));
  UdpListener l;
  REQUIRE(hub->set_port(l.port, true));
  int fd = hub->fd();
  REQUIRE(fd >= 0);
  int bad_first = 0, lost = 0, not_readable = 0, readable_when_empty = 0,
      bad_takes = 0, bad_ends = 0, bad_unreg = 0, bad_start = 0, bad_drain = 0,
      bad_deliver = 0;
  // How the races went: A's items the consumer took, those unreg killed,
  // rounds with both; rounds where unreg returned while the consumer was
  // still taking.
  int a_taken = 0, a_killed = 0, mixed = 0, overlapped = 0;
  // How many of B's items go first: adapted round by round towards the point
  // where unreg and the consumer meet (where that is depends on the machine
  // and its load), with some jitter around it.
  int kb = 64;
  int failed_round = -1;
  for (int iter = 0; iter < kIterations; ++iter) {
    void* ua = must_reg(hub.get(), libid(0));
    const int k = std::max(1, kb + iter % 7 - 3), m = 1 + iter % 12;
    std::vector<Rec> bs(static_cast<std::size_t>(k)), as(static_cast<std::size_t>(m));
    Rec late;
    // B's items, then A's at the end (in look mode one of A's sometimes
    // sits before B's last item).
    const bool interleave = look && iter % 2 == 1 && k > 1;
    for (int i = 0; i < k; ++i) {
      if (interleave && i == k - 1)
        bad_deliver += Hub::deliver(ua, rec_decode, nullptr, &as[0]) != DSS_SUCCESS;
      bad_deliver += Hub::deliver(ub, rec_decode, nullptr, &bs[std::size_t(i)]) != DSS_SUCCESS;
    }
    for (int i = interleave ? 1 : 0; i < m; ++i)
      bad_deliver += Hub::deliver(ua, rec_decode, nullptr, &as[std::size_t(i)]) != DSS_SUCCESS;
    if (l.recv(kHang) != " 1") ++bad_first;

    std::atomic<int> line{0};  // 1: the unreg thread is ready; 2: go
    std::atomic<int> unreg_rc{0};
    std::atomic<bool> consumer_done{false}, consumer_first{false};
    std::thread unregger([&] {
      line = 1;
      spin_until([&] { return line.load() == 2; });
      unreg_rc = Hub::unreg(ua);
      consumer_first = consumer_done.load();
    });
    if (!spin_until([&] { return line.load() == 1; })) ++bad_start;
    line = 2;
    if (look) {
      drain(hub.get());  // until take() finds the queue empty
    } else {
      hub->drain_enter();  // as poll and dispatch do
      for (int i = 0; i < k; ++i) {
        Taken t = hub->take();
        if (!t || t.data != &bs[std::size_t(i)]) ++bad_takes;
        if (t) hub->settle(t, hub->call_decoder(t, fake_L()));
      }
      hub->drain_leave();
    }
    consumer_done = true;
    unregger.join();
    if (unreg_rc != DSS_SUCCESS) ++bad_unreg;
    if (look && readable(fd)) ++readable_when_empty;
    int taken = 0, killed = 0;
    for (auto& r : as) {
      if (r.decoded + r.decode_cancelled != 1) ++bad_ends;
      taken += r.decoded;
      killed += r.decode_cancelled;
    }
    for (auto& r : bs)
      if (r.decoded != 1 || r.decode_cancelled != 0) ++bad_ends;
    a_taken += taken;
    a_killed += killed;
    mixed += taken && killed;
    overlapped += !consumer_first;
    // The consumer first (it took all of A, or was done before unreg
    // returned): more of B next time; else fewer.
    bool consumer_won = look ? killed == 0 : consumer_first.load();
    kb += consumer_won ? 1 + kb / 8 : -(1 + kb / 8);
    kb = std::min(std::max(kb, 1), 4000);

    // The next delivery: a datagram, and the fd readable.
    bad_deliver += Hub::deliver(ub, rec_decode, nullptr, &late) != DSS_SUCCESS;
    if (l.recv(kHang) != " 1") ++lost;
    if (!readable(fd)) ++not_readable;
    if (drain(hub.get()) != 1 || late.decoded != 1) ++bad_drain;
    if (readable(fd)) ++readable_when_empty;
    if (bad_start + bad_deliver + bad_first + bad_unreg + bad_takes + bad_ends + lost +
            not_readable + readable_when_empty + bad_drain > 0) {
      failed_round = iter;  // stop at once: each lost datagram costs kHang
      break;
    }
  }
  INFO("first failed round " << failed_round);
  INFO("A's items taken " << a_taken << ", killed " << a_killed << "; rounds with both "
       << mixed << "; unreg returned first " << overlapped << "; B's items at the end " << kb);
  CHECK(bad_start == 0);
  CHECK(bad_deliver == 0);
  CHECK(bad_first == 0);
  CHECK(bad_unreg == 0);
  CHECK(bad_takes == 0);
  CHECK(bad_ends == 0);
  CHECK(lost == 0);
  CHECK(not_readable == 0);
  CHECK(readable_when_empty == 0);
  CHECK(bad_drain == 0);
  CHECK(l.recv(kQuiet) == "<none>");  // and no datagram more than those
  CHECK(hub->size() == 0);
}

// --- 6. close() hands every client's cancel to its CancelCall -----------------------

namespace {

struct CallLog {
  bool forward = true;  // call the client's cancel (the binding does, protected)
  std::vector<std::tuple<void*, DSS_cancel_1v0_t, void*>> calls;  // ctx, cancel, utilid
  std::vector<int> items_ended_before;  // items ended when each call came
  std::vector<Rec>* items = nullptr;
};

void cancel_call(void* ctx, DSS_cancel_1v0_t cancel, void* utilid) {
  CallLog* log = static_cast<CallLog*>(ctx);
  log->calls.emplace_back(ctx, cancel, utilid);
  int ended = 0;
  if (log->items)
    for (auto& r : *log->items) ended += r.calls();
  log->items_ended_before.push_back(ended);
  if (log->forward) cancel(utilid);
}

}  // namespace

TEST_CASE("close: with a CancelCall, every client's cancel goes through it, "
          "once each, after the items ended",
          "[lifecycle][close]") {
  const bool forward = GENERATE(true, false);
  INFO("forward " << forward);
  CancelLog::get().reset();
  CallLog log;
  log.forward = forward;
  std::vector<Rec> items(4);
  log.items = &items;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0), cancel_unreg);
  void* b = must_reg(hub.get(), libid(1), cancel_record);
  void* c = must_reg(hub.get(), libid(2), cancel_hook);
  void* gone = must_reg(hub.get(), libid(3), cancel_record);
  REQUIRE(Hub::unreg(gone) == DSS_SUCCESS);  // not cancelled: not registered
  CancelLog::get().hook = [](void* u) { Hub::unreg(u); };
  // A parked item of c, queued ones of a and b.
  items[3].decode_result = 1;
  auto parked = std::make_unique<Producer>(c, rec_decode, rec_ret, &items[3]);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  Wt w(hub.get(), hub->settle(it, decode(hub.get(), it)));
  REQUIRE(w.ticket != 0);
  REQUIRE(Hub::deliver(a, rec_decode, nullptr, &items[0]) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(b, rec_decode, nullptr, &items[1]) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(b, rec_decode, nullptr, &items[2]) == DSS_SUCCESS);

  hub->close(cancel_call, &log);
  CHECK(hub->state() == Hub::State::closed);
  REQUIRE(log.calls.size() == 3);
  std::set<void*> called;
  for (auto& call : log.calls) {
    CHECK(std::get<0>(call) == &log);
    void* u = std::get<2>(call);
    called.insert(u);
    DSS_cancel_1v0_t expect = u == a ? cancel_unreg : u == b ? cancel_record : cancel_hook;
    CHECK(std::get<1>(call) == expect);
  }
  CHECK(called == std::set<void*>{a, b, c});
  // The items ended before any client was cancelled.
  for (int e : log.items_ended_before) CHECK(e == 1 + 1 + 1 + 2);
  CHECK(items[0].decode_cancelled == 1);
  CHECK(items[1].decode_cancelled == 1);
  CHECK(items[2].decode_cancelled == 1);
  CHECK(items[3].ret_cancelled == 1);
  REQUIRE(parked->done_within(kHang));
  // The core never calls a cancel itself when given a CancelCall.
  if (forward) {
    CHECK(CancelLog::get().total() == 3);
    for (void* u : {a, b, c}) CHECK(CancelLog::get().count(u) == 1);
  } else {
    CHECK(CancelLog::get().total() == 0);
  }
  CHECK(CancelLog::get().count(gone) == 0);
  // Every client is unregistered, whatever its cancel did.
  for (void* u : {a, b, c, gone}) CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  // Idempotent: a second close calls nothing.
  hub->close(cancel_call, &log);
  CHECK(log.calls.size() == 3);
  CancelLog::get().reset();
}

// --- drain_enter / drain_leave nest exactly ---------------------------------------

TEST_CASE("drain: enter and leave nest exactly; the guard holds until the depth "
          "is back to zero, and only then",
          "[lifecycle][deadlock]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  // A blocking deliver2 with timeout 0 from this thread: WOULD_DEADLOCK while
  // draining; otherwise it is queued and times out at once (cancelled).
  auto probe = [&](Rec& r) { return Hub::deliver2(u, rec_decode, rec_ret, &r, 0, 0); };
  Rec r0, r1, r2, r3, r4;
  CHECK(probe(r0) == DSS_ERR_TIMEOUT);
  for (int round = 0; round < 3; ++round) {
    const int depth = 1 + round * 2;
    for (int i = 0; i < depth; ++i) hub->drain_enter();
    for (int i = depth; i > 0; --i) {
      Rec r;
      INFO("round " << round << ", depth " << i);
      CHECK(probe(r) == DSS_ERR_WOULD_DEADLOCK);
      CHECK(r.calls() == 0);
      hub->drain_leave();
    }
    CHECK(probe(r1) == DSS_ERR_TIMEOUT);  // back to zero: not draining
  }
  // Across items taken and settled inside, as dispatch does.
  Rec f;
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &f) == DSS_SUCCESS);
  hub->drain_enter();
  Taken it = must_take(hub.get());
  hub->drain_enter();  // a nested poll from a callback
  CHECK(probe(r2) == DSS_ERR_WOULD_DEADLOCK);
  hub->drain_leave();
  CHECK(probe(r3) == DSS_ERR_WOULD_DEADLOCK);
  hub->settle(it, decode(hub.get(), it));
  hub->drain_leave();
  CHECK(probe(r4) == DSS_ERR_TIMEOUT);
  CHECK(r0.decode_cancelled == 1);
  CHECK(r1.decode_cancelled == 3);
  CHECK(r2.calls() == 0);
  CHECK(r3.calls() == 0);
  CHECK(r4.decode_cancelled == 1);
  CHECK(f.decoded == 1);
}
