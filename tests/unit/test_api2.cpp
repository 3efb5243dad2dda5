// The 2v0 additions: deliver2 (NOWAIT, timeouts), queued(), the bounded
// queue, the wake-up fd, wait(), the deadlock guard and stats().
#include "helpers.hpp"

#include <poll.h>

#include <cerrno>

using namespace ut;

namespace {

// CHECKs every counter of hub->stats() against e.
void check_stats(Hub* hub, const dss::Stats& e) {
  dss::Stats s = hub->stats();
  CHECK(s.delivered == e.delivered);
  CHECK(s.decoded == e.decoded);
  CHECK(s.returned == e.returned);
  CHECK(s.cancelled == e.cancelled);
  CHECK(s.timedout == e.timedout);
  CHECK(s.rejected == e.rejected);
  CHECK(s.notified == e.notified);
  CHECK(s.notifyfailed == e.notifyfailed);
  CHECK(s.queued == e.queued);
  CHECK(s.maxqueued == e.maxqueued);
  CHECK(s.blocked == e.blocked);
}

// The thread that ran a decoder last (to tell the producer's from ours).
std::atomic<std::thread::id> g_decoder_thread;

int tid_decode(lua_State* L, void* p, void* u) {
  g_decoder_thread = std::this_thread::get_id();
  return rec_decode(L, p, u);
}

int tid_ret(lua_State* L, void* p, void* u, int garbage) {
  g_decoder_thread = std::this_thread::get_id();
  return rec_ret(L, p, u, garbage);
}

}  // namespace

TEST_CASE("deliver2: NOWAIT (or timeout 0) on a full bounded queue fails at once "
          "with QUEUE_FULL, nothing queued", "[api2][maxqueue]") {
  Rec r, b;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  CHECK(hub->max() == 0);
  hub->set_max(2);
  CHECK(hub->max() == 2);
  REQUIRE(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT,
                        DSS_TIMEOUT_INFINITE) == DSS_SUCCESS);
  REQUIRE(Hub::deliver2(u, rec_decode, nullptr, &r, 0, 0) == DSS_SUCCESS);
  REQUIRE(hub->size() == 2);

  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT,
                      DSS_TIMEOUT_INFINITE) == DSS_ERR_QUEUE_FULL);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT, 5000) ==
        DSS_ERR_QUEUE_FULL);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, 0, 0) == DSS_ERR_QUEUE_FULL);
  {
    // A blocking one too, without waiting for room or an answer (on a
    // thread, so that a broken core fails the test instead of hanging it).
    Producer p(u, rec_decode, rec_ret, &b, V2{DSS_DELIVER_NOWAIT, DSS_TIMEOUT_INFINITE});
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_QUEUE_FULL);
  }
  CHECK(hub->size() == 2);
  CHECK(Hub::queued(u) == 2);
  CHECK(r.calls() == 0);
  CHECK(b.calls() == 0);
  dss::Stats s = hub->stats();
  CHECK(s.rejected == 4);
  CHECK(s.delivered == 2);
  CHECK(s.blocked == 0);

  // One taken: room for exactly one again.
  hub->finish(must_take(hub.get()));
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT,
                      DSS_TIMEOUT_INFINITE) == DSS_SUCCESS);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT,
                      DSS_TIMEOUT_INFINITE) == DSS_ERR_QUEUE_FULL);
  CHECK(hub->stats().rejected == 5);
  // Lowering the limit below the size drops nothing.
  hub->set_max(1);
  CHECK(hub->size() == 2);
  // Unbounded again.
  hub->set_max(0);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT,
                      DSS_TIMEOUT_INFINITE) == DSS_SUCCESS);
  CHECK(hub->size() == 3);
  CHECK(hub->stats().rejected == 5);
  CHECK(r.calls() == 0);
}

TEST_CASE("deliver2: unknown flag bits, no decoder, a stale utilid", "[api2]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, 0x2u, -1) == DSS_ERR_INVALID_ARGUMENT);
  CHECK(Hub::deliver2(u, rec_decode, rec_ret, &r, ~0u, -1) == DSS_ERR_INVALID_ARGUMENT);
  CHECK(Hub::deliver2(u, nullptr, nullptr, &r, 0, -1) == DSS_ERR_NO_DECODE_PROVIDED);
  CHECK(Hub::deliver2(nullptr, rec_decode, nullptr, &r, 0, -1) == DSS_ERR_INVALID_UTILID);
  CHECK(hub->size() == 0);
  REQUIRE(Hub::unreg(u) == DSS_SUCCESS);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, 0, -1) == DSS_ERR_INVALID_UTILID);
  CHECK(hub->size() == 0);
  CHECK(hub->stats().delivered == 0);
  CHECK(r.calls() == 0);
}

TEST_CASE("deliver2: a producer waits for room in a full queue; its timeout ends "
          "the wait with nothing queued", "[api2][maxqueue]") {
  Rec first, waiting, late;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  hub->set_max(1);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &first) == DSS_SUCCESS);

  // No room in time: TIMEOUT, nothing queued, counted as rejected.
  {
    Producer p(u, rec_decode, nullptr, &late, V2{0, 30});
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
  }
  CHECK(hub->size() == 1);
  CHECK(Hub::queued(u) == 1);
  CHECK(late.calls() == 0);
  CHECK(hub->stats().rejected == 1);

  // No limit on the wait: blocked until the item is taken (by a poll: the
  // room is handed out when it returns, at the latest).
  Producer p(u, rec_decode, nullptr, &waiting, V2{0, DSS_TIMEOUT_INFINITE});
  REQUIRE(wait_until([&] { return hub->stats().blocked == 1; }));
  CHECK_FALSE(p.done_within(kQuiet));
  CHECK(hub->size() == 1);
  Taken it = must_take(hub.get());
  hub->drain_enter();
  CHECK(it.data == &first);
  hub->finish(it);
  hub->drain_leave();
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_SUCCESS);
  CHECK(hub->size() == 1);
  it = must_take(hub.get());
  CHECK(it.data == &waiting);
  hub->finish(it);
  dss::Stats s = hub->stats();
  CHECK(s.delivered == 2);
  CHECK(s.rejected == 1);
  CHECK(s.blocked == 0);
  CHECK(s.maxqueued == 1);
}

TEST_CASE("maxqueue: producers waiting for room get it when poll returns, and a "
          "batch (max/2) at a time while a dispatch runs", "[api2][maxqueue]") {
  Rec r, w1, w2;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));

  // As poll: take, then decode and end the item inside drain_enter/leave.
  hub->set_max(2);
  for (int i = 0; i < 2; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  Producer p1(u, rec_decode, nullptr, &w1);
  REQUIRE(wait_until([&] { return hub->stats().blocked == 1; }));
  Taken it = must_take(hub.get());  // not the last item queued
  hub->drain_enter();
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  hub->drain_leave();
  REQUIRE(p1.done_within(kHang));
  CHECK(p1.rc() == DSS_SUCCESS);
  CHECK(hub->size() == 2);
  for (int i = 0; i < 2; ++i) hub->finish(must_take(hub.get()));
  CHECK(hub->size() == 0);

  // As dispatch: drain_enter, then many items taken and ended; a producer
  // gets in once a batch of room (16 / 2 = 8) was made, dispatch still
  // running.
  hub->set_max(16);
  for (int i = 0; i < 16; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  Producer p2(u, rec_decode, nullptr, &w2);
  REQUIRE(wait_until([&] { return hub->stats().blocked == 1; }));
  hub->drain_enter();
  for (int i = 0; i < 9; ++i) {  // the ninth take hands the room out
    it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 0);
    CHECK(hub->settle(it, 0) == 0);
  }
  REQUIRE(p2.done_within(kHang));
  CHECK(p2.rc() == DSS_SUCCESS);
  CHECK(hub->size() == 8);
  int left = 0;
  while (Taken t = hub->take()) {
    ++left;
    hub->finish(t);
  }
  hub->drain_leave();
  CHECK(left == 8);
  CHECK(w2.calls() == 0);  // among them, not decoded
  dss::Stats s = hub->stats();
  CHECK(s.delivered == 2 + 1 + 16 + 1);
  CHECK(s.decoded == 1 + 9);
  CHECK(s.maxqueued == 16);
  CHECK(s.blocked == 0);
  CHECK(s.rejected == 0);
}

TEST_CASE("deliver2: a blocking item whose timeout passes while it is queued is "
          "removed and cancelled, on the producer's thread", "[api2][timeout]") {
  Rec r, after;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  g_decoder_thread = std::this_thread::get_id();
  {
    Producer p(u, tid_decode, rec_ret, &r, V2{0, 30});
    REQUIRE(p.done_within(kHang));  // nobody takes it
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
  }
  CHECK(r.decode_cancelled == 1);  // decode(NULL, pData, utilid), once
  CHECK(r.decoded == 0);
  CHECK(r.calls() == 1);  // no return callback for a queued item
  CHECK(r.utilid == u);
  CHECK(r.bad_args == 0);
  CHECK(g_decoder_thread.load() != std::this_thread::get_id());
  CHECK(hub->size() == 0);
  CHECK(Hub::queued(u) == 0);
  CHECK_FALSE(hub->take());
  dss::Stats s = hub->stats();
  CHECK(s.delivered == 1);
  CHECK(s.timedout == 1);
  CHECK(s.cancelled == 0);
  CHECK(s.blocked == 0);
  CHECK(s.queued == 0);
  // The queue goes on as usual; close finds nothing of it to cancel.
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &after) == DSS_SUCCESS);
  Taken it = must_take(hub.get());
  CHECK(it.data == &after);
  hub->finish(it);
  hub->close();
  CHECK(r.calls() == 1);
  CHECK(after.calls() == 0);
}

TEST_CASE("deliver2: a blocking item whose timeout passes while it is parked is "
          "cancelled through ret; its waiting-thread callback is spent",
          "[api2][timeout]") {
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  // The item must be taken before its deadline; should this thread lose
  // that race (a loaded machine), it ends as in the queued case and the
  // next round gives it more time.
  bool parked = false;
  int lost = 0;
  for (long timeout : {300L, 3000L, 15000L}) {
    Rec r;
    r.decode_result = 1;
    g_decoder_thread = std::this_thread::get_id();
    Producer p(u, rec_decode, tid_ret, &r, V2{0, timeout});
    REQUIRE(wait_until([&] { return hub->size() == 1 || p.done(); }));
    Taken it = hub->take();
    if (!it) {
      REQUIRE(p.done_within(kHang));
      CHECK(p.rc() == DSS_ERR_TIMEOUT);
      CHECK(r.decode_cancelled == 1);
      ++lost;
      continue;
    }
    REQUIRE(decode(hub.get(), it) == 1);
    Wt w(hub.get(), hub->settle(it, 1));
    REQUIRE(w.ticket != 0);
    REQUIRE(p.done_within(kHang));  // nobody answers
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
    CHECK(r.decoded == 1);
    CHECK(r.ret_cancelled == 1);  // ret(NULL, pData, utilid, 0), once
    CHECK(r.calls() == 2);
    CHECK(r.bad_args == 0);
    CHECK(g_decoder_thread.load() != std::this_thread::get_id());
    // The Lua side's late call reaches nothing.
    CHECK_FALSE(hub->pending(w.ticket));
    CHECK_FALSE(answer(w));
    CHECK(r.calls() == 2);
    dss::Stats s = hub->stats();
    CHECK(s.timedout == std::uint64_t(1 + lost));
    CHECK(s.returned == 0);
    CHECK(s.cancelled == 0);
    CHECK(s.blocked == 0);
    parked = true;
    break;
  }
  CHECK(parked);
}

TEST_CASE("deliver2: a blocking item whose timeout passes while it is being "
          "decoded is ended by its producer once parked, also when a nested "
          "drain let its entry's block go meanwhile", "[api2][timeout]") {
  for (bool nested : {false, true}) {
    HubHandle hub;
    void* u = must_reg(hub.get(), libid(0));
    Rec r, ff;
    r.decode_result = 1;
    auto deliver_ff = [&](int n) {
      for (int i = 0; i < n; ++i)
        REQUIRE(Hub::deliver(u, rec_decode, nullptr, &ff) == DSS_SUCCESS);
    };
    auto drain_ff = [&](int n) {
      for (int i = 0; i < n; ++i) hub->finish(must_take(hub.get()));
    };
    // Nested: the drain below must be done before the deadline, so that
    // the timed-out producer looks at its item after its block went.
    long timeout = nested ? 400 : 30;
    int before = 0;
    if (nested) {
      // Passing three blocks leaves the queue a spare (the first block
      // passed) and one block started over; a full block before the
      // blocking item's makes that one the first passed below, so that
      // the item's own block is freed, not kept as the spare.
      deliver_ff(1000);
      drain_ff(1000);
      CHECK_FALSE(hub->take());
      before = 340;
      deliver_ff(before);
    }
    Producer p(u, rec_decode, rec_ret, &r, V2{0, timeout});
    REQUIRE(wait_until([&] { return hub->size() == std::size_t(before) + 1 || p.done(); }));
    REQUIRE_FALSE(p.done());  // (a loaded machine would fail here, not hang)
    // More items in the same reservation: the take below does not end it,
    // so the claimed item is not marked taken yet (see untaken_push).
    int after = nested ? 2000 : 1;
    deliver_ff(after);
    drain_ff(before);
    Taken it = must_take(hub.get());
    REQUIRE(it.blk);
    if (nested) {
      // A nested drain (as a decoder calling poll) to the end of the
      // reservation: the blocks passed, the item's among them, are let go.
      drain_ff(after);
      CHECK_FALSE(hub->take());
      CHECK_FALSE(p.done());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout + 70));  // past it
    CHECK_FALSE(p.done());  // waits for the decoder
    REQUIRE(decode(hub.get(), it) == 1);
    Wt w(hub.get(), hub->settle(it, 1));
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
    CHECK(r.decoded == 1);
    CHECK(r.ret_cancelled == 1);
    CHECK(r.calls() == 2);
    CHECK_FALSE(answer(w));
    CHECK(hub->stats().timedout == 1);
    if (!nested) drain_ff(after);
  }
}

TEST_CASE("deliver2: answered before its timeout, a blocking item succeeds",
          "[api2][timeout]") {
  Rec r;
  r.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Producer p(u, rec_decode, rec_ret, &r, V2{0, 60000});
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 1);
  Wt w(hub.get(), hub->settle(it, 1));
  REQUIRE(w.ticket != 0);
  REQUIRE(answer(w));
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.returned == 1);
  CHECK(r.calls() == 2);
  CHECK(hub->stats().timedout == 0);
}

TEST_CASE("deliver2: a cancelled blocking item returns CANCELLED (1v0 deliver: "
          "SUCCESS)", "[api2][cancel]") {
  Rec r1, r2;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Producer p1(u, rec_decode, rec_ret, &r1);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Producer p2(u, rec_decode, rec_ret, &r2, V2{0, DSS_TIMEOUT_INFINITE});
  REQUIRE(wait_until([&] { return hub->size() == 2; }));
  REQUIRE(Hub::unreg(u) == DSS_SUCCESS);
  REQUIRE(p1.done_within(kHang));
  REQUIRE(p2.done_within(kHang));
  CHECK(p1.rc() == DSS_SUCCESS);
  CHECK(p2.rc() == DSS_ERR_CANCELLED);
  CHECK(r1.decode_cancelled == 1);
  CHECK(r2.decode_cancelled == 1);
  CHECK(hub->stats().cancelled == 2);
}

TEST_CASE("queued: counts the items of one utilid not yet taken", "[api2][queued]") {
  Rec r, rb;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0));
  void* b = must_reg(hub.get(), libid(1));
  CHECK(Hub::queued(a) == 0);
  CHECK(Hub::queued(b) == 0);
  for (int i = 0; i < 5; ++i)
    REQUIRE(Hub::deliver(i % 2 ? b : a, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(Hub::queued(a) == 3);
  CHECK(Hub::queued(b) == 2);
  Producer p(a, rec_decode, rec_ret, &rb);  // a blocking item counts too
  REQUIRE(wait_until([&] { return hub->size() == 6; }));
  CHECK(Hub::queued(a) == 4);
  // Taken items no longer count.
  hub->finish(must_take(hub.get()));  // a
  CHECK(Hub::queued(a) == 3);
  CHECK(Hub::queued(b) == 2);
  hub->finish(must_take(hub.get()));  // b
  CHECK(Hub::queued(a) == 3);
  CHECK(Hub::queued(b) == 1);
  // Across blocks.
  const long N = 2 * long(Hub::kEntries) + 10;
  for (long i = 0; i < N; ++i)
    REQUIRE(Hub::deliver(b, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(Hub::queued(b) == N + 1);
  CHECK(Hub::queued(a) == 3);
  // Cancelled items no longer count; the utilid is stale.
  REQUIRE(Hub::unreg(b) == DSS_SUCCESS);
  CHECK(Hub::queued(b) == DSS_ERR_INVALID_UTILID);
  CHECK(Hub::queued(a) == 3);
  CHECK(Hub::queued(nullptr) == DSS_ERR_INVALID_UTILID);
  CHECK(Hub::queued(reinterpret_cast<void*>(std::uintptr_t(0xdeadbeef))) ==
        DSS_ERR_INVALID_UTILID);
  // a's remaining three: two fire-and-forget, then the blocking one.
  hub->finish(must_take(hub.get()));
  hub->finish(must_take(hub.get()));
  CHECK(Hub::queued(a) == 1);
  Taken it = must_take(hub.get());
  REQUIRE(it.blk != nullptr);
  CHECK(Hub::queued(a) == 0);  // decoding, not queued
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  REQUIRE(p.done_within(kHang));
  CHECK(Hub::queued(a) == 0);
  CHECK(hub->size() == 0);
  hub->close();
  CHECK(Hub::queued(a) == DSS_ERR_INVALID_UTILID);
}

TEST_CASE("fd: readable exactly while the queue is non-empty", "[api2][fd]") {
  Rec r, rb;
  rb.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  void* v = must_reg(hub.get(), libid(1));
  int fd = hub->fd();
  REQUIRE(fd >= 0);
  CHECK(hub->fd() == fd);  // made once
  CHECK_FALSE(readable(fd));

  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  hub->finish(must_take(hub.get()));
  CHECK(readable(fd));  // one left
  hub->finish(must_take(hub.get()));
  CHECK_FALSE(readable(fd));
  CHECK_FALSE(hub->take());
  CHECK_FALSE(readable(fd));

  // Over and over, across blocks.
  int wrong = 0;
  for (std::size_t i = 0; i < 3 * Hub::kEntries; ++i) {
    if (Hub::deliver(u, rec_decode, nullptr, &r) != DSS_SUCCESS) ++wrong;
    if (!readable(fd)) ++wrong;
    if (i % 3 == 2) {
      for (int k = 0; k < 3; ++k) {
        if (!readable(fd)) ++wrong;
        Taken it = hub->take();
        if (!it) ++wrong;
        else hub->finish(it);
      }
      if (readable(fd) != (hub->size() > 0)) ++wrong;
    }
  }
  CHECK(wrong == 0);
  CHECK(hub->size() == 0);
  CHECK_FALSE(readable(fd));

  // A blocking item: readable while queued, not while decoded or parked.
  Producer p(u, rec_decode, rec_ret, &rb);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  CHECK(readable(fd));
  Taken it = must_take(hub.get());
  CHECK_FALSE(readable(fd));
  REQUIRE(decode(hub.get(), it) == 1);
  Wt wt(hub.get(), hub->settle(it, 1));
  REQUIRE(wt.ticket != 0);
  CHECK_FALSE(readable(fd));
  REQUIRE(answer(wt));
  REQUIRE(p.done_within(kHang));
  CHECK_FALSE(readable(fd));

  // Items killed by unreg: the last one leaves the fd unreadable...
  REQUIRE(Hub::deliver(v, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  REQUIRE(Hub::unreg(v) == DSS_SUCCESS);
  CHECK(hub->size() == 0);
  CHECK_FALSE(readable(fd));
  // ...and so does taking the last live item when a killed one ends the
  // consumer's reservation.
  void* w = must_reg(hub.get(), libid(2));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(w, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::unreg(w) == DSS_SUCCESS);
  CHECK(hub->size() == 1);
  CHECK(readable(fd));
  hub->finish(must_take(hub.get()));
  CHECK(hub->size() == 0);
  CHECK_FALSE(readable(fd));
  // And the next delivery makes it readable again.
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  hub->finish(must_take(hub.get()));
  CHECK_FALSE(readable(fd));
}

TEST_CASE("fd: reset when the consumer takes the last live item and the rest of "
          "its reservation was killed (unreg); the next deliver signals again",
          "[api2][fd]") {
  Rec r, rb;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0));
  void* b = must_reg(hub.get(), libid(1));
  int fd = hub->fd();
  REQUIRE(fd >= 0);
  for (int i = 0; i < 3; ++i) REQUIRE(Hub::deliver(a, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(b, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  hub->finish(must_take(hub.get()));  // reserves all four
  REQUIRE(Hub::unreg(b) == DSS_SUCCESS);  // kills the last one
  CHECK(rb.decode_cancelled == 1);
  CHECK(hub->size() == 2);
  hub->finish(must_take(hub.get()));
  CHECK(readable(fd));  // one left
  hub->finish(must_take(hub.get()));
  CHECK(hub->size() == 0);
  CHECK_FALSE(readable(fd));
  std::uint64_t before = hub->stats().notified;
  REQUIRE(Hub::deliver(a, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  CHECK(hub->stats().notified == before + 1);
  hub->finish(must_take(hub.get()));
  CHECK_FALSE(readable(fd));
}

TEST_CASE("fd: made while items are queued, it is readable at once; closed "
          "with the hub", "[api2][fd]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  int fd = hub->fd();
  REQUIRE(fd >= 0);
  CHECK(readable(fd));
  hub->finish(must_take(hub.get()));
  CHECK_FALSE(readable(fd));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(readable(fd));
  hub->close();  // cancels the item
  CHECK(r.decode_cancelled == 1);
  errno = 0;
  CHECK(hub->fd() == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("wait: returns the size at once when non-empty or with timeout 0; "
          "otherwise until a delivery, the timeout or close", "[api2][wait]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  CHECK(hub->wait(0.0) == 0);
  for (int i = 0; i < 3; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->wait(0.0) == 3);
  CHECK(hub->wait(-1) == 3);  // no limit, but not empty: at once
  CHECK(hub->wait(1e9) == 3);
  hub->finish(must_take(hub.get()));
  CHECK(hub->wait(0.0) == 2);
  hub->finish(must_take(hub.get()));
  hub->finish(must_take(hub.get()));
  CHECK(hub->wait(0.0) == 0);
  CHECK(hub->wait(0.02) == 0);  // a short timeout on an empty queue

  // Woken by a delivery from another thread.
  std::atomic<long> got{-1};
  std::thread waiter([&] { got = long(hub->wait(-1)); });
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  bool woke = wait_until([&] { return got.load() >= 0; });
  if (!woke) hub->close();  // a broken core: release it rather than hang
  waiter.join();
  CHECK(woke);
  CHECK(got == 1);
  hub->finish(must_take(hub.get()));

  // Woken by close, with 0.
  got = -1;
  std::thread waiter2([&] { got = long(hub->wait(-1)); });
  hub->close();
  waiter2.join();
  CHECK(got == 0);
  CHECK(hub->wait(-1) == 0);  // closed: at once
}

TEST_CASE("drain: a deliver that would wait on the draining thread fails with "
          "WOULD_DEADLOCK; other threads are not affected", "[api2][deadlock]") {
  Rec r, other;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::atomic<int> blocking_rc{0}, nested_rc{0}, ff_rc{0}, full_rc{0},
      nowait_rc{0}, after_inf_rc{0}, after_rc{0};
  std::atomic<bool> done{false};
  // The thread acting as the Lua thread in poll/dispatch/wait.
  std::thread lua([&] {
    hub->drain_enter();
    blocking_rc = Hub::deliver2(u, rec_decode, rec_ret, &r, 0, DSS_TIMEOUT_INFINITE);
    hub->drain_enter();  // nested
    hub->drain_leave();
    nested_rc = Hub::deliver(u, rec_decode, rec_ret, &r);
    ff_rc = Hub::deliver(u, rec_decode, nullptr, &r);  // never waits
    hub->set_max(1);
    full_rc = Hub::deliver(u, rec_decode, nullptr, &r);  // would wait for room
    nowait_rc = Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT, -1);
    hub->set_max(0);
    hub->drain_leave();
    // Not draining any more, but still the thread that last drained (the
    // Lua thread between two drains): a wait with no limit would never
    // end; one with a limit may (here a decoder-0 end by the test's
    // thread, acting as another consumer).
    after_inf_rc = Hub::deliver(u, rec_decode, rec_ret, &other);
    after_rc = Hub::deliver2(u, rec_decode, rec_ret, &other, 0, 60000);
    done = true;
  });
  // (stats() takes the hub's lock: what the thread stored before its second
  // item was queued is visible once it is.)
  REQUIRE(wait_until([&] { return hub->stats().queued == 2; }));
  CHECK(blocking_rc == DSS_ERR_WOULD_DEADLOCK);
  CHECK(nested_rc == DSS_ERR_WOULD_DEADLOCK);
  CHECK(ff_rc == DSS_SUCCESS);
  CHECK(full_rc == DSS_ERR_WOULD_DEADLOCK);
  CHECK(nowait_rc == DSS_ERR_QUEUE_FULL);  // it would not wait
  CHECK_FALSE(done.load());
  hub->finish(must_take(hub.get()));  // the fire-and-forget one
  Taken it = must_take(hub.get());
  CHECK(it.data == &other);
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  bool ok = wait_until([&] { return done.load(); });
  if (!ok) hub->close();
  lua.join();
  CHECK(ok);
  CHECK(after_inf_rc == DSS_ERR_WOULD_DEADLOCK);
  CHECK(after_rc == DSS_SUCCESS);
  CHECK(r.calls() == 0);
  CHECK(other.decoded == 1);

  // The guard is per thread: with this thread draining, another thread's
  // blocking deliver just waits.
  hub->drain_enter();
  Producer p(u, rec_decode, rec_ret, &other);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  CHECK_FALSE(p.done_within(kQuiet));
  it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  hub->drain_leave();
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_SUCCESS);
}

TEST_CASE("stats: every counter exact through a run of each kind of item",
          "[api2][stats]") {
  Rec r, rb, rt, rq, rp, rr;
  rb.decode_result = 1;
  rp.decode_result = 1;
  rr.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  void* v = must_reg(hub.get(), libid(1));
  dss::Stats e{};
  check_stats(hub.get(), e);

  // Without an fd or a port, nothing is notified.
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  e.delivered = 1, e.queued = 1, e.maxqueued = 1;
  check_stats(hub.get(), e);
  // With an fd: one write per run of a non-empty queue.
  int fd = hub->fd();
  REQUIRE(fd >= 0);
  e.notified = 1;  // made while non-empty
  check_stats(hub.get(), e);
  for (int i = 0; i < 2; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  e.delivered = 3, e.queued = 3, e.maxqueued = 3;
  check_stats(hub.get(), e);
  for (int i = 0; i < 3; ++i) {
    Taken it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 0);
    CHECK(hub->settle(it, 0) == 0);
  }
  e.decoded = 3, e.queued = 0;
  check_stats(hub.get(), e);

  // A blocking item answered from Lua.
  {
    Producer p(u, rec_decode, rec_ret, &rb);
    REQUIRE(wait_until([&] { return hub->size() == 1; }));
    e.delivered = 4, e.queued = 1, e.notified = 2, e.blocked = 1;
    check_stats(hub.get(), e);
    Taken it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 1);
    Wt w(hub.get(), hub->settle(it, 1));
    REQUIRE(w.ticket != 0);
    e.decoded = 4, e.queued = 0;
    check_stats(hub.get(), e);
    REQUIRE(answer(w, 0));
    REQUIRE(p.done_within(kHang));
    e.returned = 1, e.blocked = 0;
    check_stats(hub.get(), e);
  }

  // Rejected: NOWAIT on a full queue, and a timed wait for room.
  hub->set_max(1);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, DSS_DELIVER_NOWAIT, -1) ==
        DSS_ERR_QUEUE_FULL);
  CHECK(Hub::deliver2(u, rec_decode, nullptr, &r, 0, 20) == DSS_ERR_TIMEOUT);
  e.delivered = 5, e.queued = 1, e.notified = 3, e.rejected = 2;
  check_stats(hub.get(), e);
  hub->set_max(0);
  hub->finish(must_take(hub.get()));  // not decoded: not counted as such
  e.queued = 0;
  check_stats(hub.get(), e);

  // Timed out while queued.
  {
    Producer p(u, rec_decode, rec_ret, &rt, V2{0, 20});
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_TIMEOUT);
  }
  e.delivered = 6, e.notified = 4, e.timedout = 1;
  check_stats(hub.get(), e);

  // Cancelled by unreg: one queued fire-and-forget item and a parked one.
  Producer pp(v, rec_decode, rec_ret, &rp);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 1);
  Wt wt(hub.get(), hub->settle(it, 1));
  REQUIRE(wt.ticket != 0);
  REQUIRE(Hub::deliver(v, rec_decode, nullptr, &rq) == DSS_SUCCESS);
  e.delivered = 8, e.decoded = 5, e.notified = 6, e.queued = 1, e.blocked = 1;
  check_stats(hub.get(), e);
  REQUIRE(Hub::unreg(v) == DSS_SUCCESS);
  REQUIRE(pp.done_within(kHang));
  CHECK(pp.rc() == DSS_SUCCESS);
  CHECK(rp.ret_cancelled == 1);
  CHECK(rq.decode_cancelled == 1);
  e.cancelled = 2, e.queued = 0, e.blocked = 0;
  check_stats(hub.get(), e);

  // Cancelled by settle: not parked (unregistered meanwhile).
  void* w = must_reg(hub.get(), libid(2));
  Producer pr(w, rec_decode, rec_ret, &rr);
  REQUIRE(wait_until([&] { return hub->size() == 1; }));
  it = must_take(hub.get());
  REQUIRE(Hub::unreg(w) == DSS_SUCCESS);
  REQUIRE(decode(hub.get(), it) == 1);
  CHECK(hub->settle(it, 1) == 0);
  REQUIRE(pr.done_within(kHang));
  CHECK(rr.ret_cancelled == 1);
  e.delivered = 9, e.decoded = 6, e.notified = 7, e.cancelled = 3;
  check_stats(hub.get(), e);
}
