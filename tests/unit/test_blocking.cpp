// Blocking deliveries (ret != NULL): the producer stays blocked until the
// consumer (or a cancellation) ends its item, by each of the ways an item
// can end, and is then released exactly then.
#include "helpers.hpp"

using namespace ut;

namespace {

// Starts a blocking producer and waits until its item is queued.
struct Blocked {
  Producer prod;
  Blocked(Hub* hub, void* u, Rec* r, std::size_t expect_size = 1)
      : prod(u, rec_decode, rec_ret, r) {
    REQUIRE(wait_until([&] { return hub->size() == expect_size; }));
  }
};

}  // namespace

TEST_CASE("blocking: released by settle() after the decoder returns 0", "[blocking]") {
  Rec r;
  r.decode_result = 0;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);
  CHECK_FALSE(b.prod.done_within(kQuiet));

  Taken it = must_take(hub.get());
  CHECK(it.data == &r);
  REQUIRE(it.blk != nullptr);
  CHECK(it.blk->ret == rec_ret);
  CHECK(it.blk->st == Blocking::St::taken);
  CHECK(hub->size() == 0);
  CHECK_FALSE(b.prod.done_within(kQuiet));  // taken is not ended
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK_FALSE(b.prod.done_within(kQuiet));  // decoded is not ended
  CHECK(hub->settle(it, 0) == 0);  // ends it: no ticket
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.calls() == 1);  // the return callback is NOT called
  CHECK(r.utilid == u);
  CHECK(r.bad_args == 0);
}

TEST_CASE("blocking: a decoder raising ends the item through finish(), as 0 would",
          "[blocking]") {
  Rec r;
  r.decode_result = 3;  // what it would have returned, had it not raised
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 3);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  hub->finish(it);  // what poll and dispatch do when the decoder's pcall fails
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.calls() == 1);  // neither the return callback nor a cancellation
  CHECK(hub->stats().decoded == 1);
  CHECK(hub->stats().cancelled == 0);
}

TEST_CASE("blocking: released after settle, claim, the return callback and "
          "finish_returned",
          "[blocking]") {
  const int garbage = GENERATE(0, 1);  // called by Lua, or collected uncalled
  Rec r;
  r.decode_result = 2;
  r.ret_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);

  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 2);
  Wt w(hub.get(), hub->settle(it, 2));
  REQUIRE(w.ticket != 0);
  CHECK(it.blk->ticket == w.ticket);
  CHECK(it.blk->st == Blocking::St::parked);
  CHECK(hub->pending(w.ticket));
  CHECK(hub->size() == 0);  // parked items are not queued
  CHECK_FALSE(hub->take());
  CHECK_FALSE(b.prod.done_within(kQuiet));

  Blocking* claimed = hub->claim(w.ticket);
  REQUIRE(claimed == it.blk);
  CHECK(claimed->st == Blocking::St::returning);
  CHECK(claimed->ticket == 0);
  CHECK_FALSE(hub->pending(w.ticket));
  CHECK(hub->claim(w.ticket) == nullptr);  // only the first claim gets it
  CHECK_FALSE(b.prod.done_within(kQuiet));
  CHECK(hub->call_return(claimed, fake_L(), garbage) == 1);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  hub->finish_returned(claimed);
  w.ticket = 0;  // spent
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.returned == (garbage ? 0 : 1));
  CHECK(r.collected == (garbage ? 1 : 0));
  CHECK(r.calls() == 2);
  CHECK(r.bad_args == 0);
  CHECK(hub->stats().decoded == 1);
  CHECK(hub->stats().returned == 1);
  // The hub does not end it again at close.
  hub->close();
  CHECK(r.calls() == 2);
}

TEST_CASE("blocking: released by settle() when unregistered while decoding",
          "[blocking]") {
  Rec r;
  r.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 1);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  REQUIRE(Hub::unreg(u) == DSS_SUCCESS);  // the taken item is not unreg's
  CHECK_FALSE(b.prod.done_within(kQuiet));
  CHECK(hub->settle(it, 1) == 0);  // ended by cancellation, here
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.ret_cancelled == 1);  // ret(NULL, pData, utilid, 0)
  CHECK(r.calls() == 2);
  CHECK(r.utilid == u);
  CHECK(r.bad_args == 0);
}

TEST_CASE("blocking: unreg while queued cancels through the decoder with L == NULL",
          "[blocking][cancel]") {
  CancelLog::get().reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);  // it was queued: deliver succeeded
  CHECK(hub->size() == 0);
  CHECK_FALSE(hub->take());
  CHECK(r.decode_cancelled == 1);
  CHECK(r.calls() == 1);  // no return callback for a queued item
  CHECK(r.utilid == u);
  CHECK(CancelLog::get().total() == 0);  // unreg does not call cancel
}

TEST_CASE("blocking: unreg while parked cancels through ret with L == NULL",
          "[blocking][cancel]") {
  CancelLog::get().reset();
  Rec r;
  r.decode_result = 3;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  Blocked b(hub.get(), u, &r);
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 3);
  Wt w(hub.get(), hub->settle(it, 3));
  REQUIRE(w.ticket != 0);
  CHECK_FALSE(b.prod.done_within(kQuiet));

  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.ret_cancelled == 1);
  CHECK(r.calls() == 2);
  CHECK(r.utilid == u);
  CHECK(r.bad_args == 0);
  // The Lua side's later call finds nothing to do.
  CHECK_FALSE(hub->pending(w.ticket));
  CHECK(hub->claim(w.ticket) == nullptr);
  CHECK(CancelLog::get().total() == 0);
}

TEST_CASE("blocking: close while queued cancels through the decoder", "[blocking][close]") {
  CancelLog::get().reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0), cancel_unreg);
  Blocked b(hub.get(), u, &r);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  hub->close();
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decode_cancelled == 1);
  CHECK(r.calls() == 1);
  CHECK(CancelLog::get().count(u) == 1);
}

TEST_CASE("blocking: close while parked cancels through ret", "[blocking][close]") {
  CancelLog::get().reset();
  Rec r;
  r.decode_result = 1;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0), cancel_unreg);
  Blocked b(hub.get(), u, &r);
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 1);
  Wt w(hub.get(), hub->settle(it, 1));
  REQUIRE(w.ticket != 0);
  CHECK_FALSE(b.prod.done_within(kQuiet));
  hub->close();
  REQUIRE(b.prod.done_within(kHang));
  CHECK(b.prod.rc() == DSS_SUCCESS);
  CHECK(r.decoded == 1);
  CHECK(r.ret_cancelled == 1);
  CHECK(r.calls() == 2);
  CHECK(hub->claim(w.ticket) == nullptr);
  CHECK(CancelLog::get().count(u) == 1);
}

TEST_CASE("blocking: each producer is released by its own item only", "[blocking]") {
  const int P = 4;
  std::vector<Rec> recs(P);
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::vector<std::unique_ptr<Producer>> prods;
  for (int i = 0; i < P; ++i) {
    // One at a time, so that the queue order is known.
    prods.push_back(std::make_unique<Producer>(u, rec_decode, rec_ret, &recs[std::size_t(i)]));
    REQUIRE(wait_until([&] { return hub->size() == std::size_t(i + 1); }));
  }
  std::vector<Taken> items;
  for (int i = 0; i < P; ++i) {
    items.push_back(must_take(hub.get()));
    CHECK(items.back().data == &recs[std::size_t(i)]);
  }
  // End them out of order: 2, 0, 3, 1.
  for (int i : {2, 0, 3, 1}) {
    CHECK_FALSE(prods[std::size_t(i)]->done());
    REQUIRE(decode(hub.get(), items[std::size_t(i)]) == 0);
    CHECK(hub->settle(items[std::size_t(i)], 0) == 0);
    REQUIRE(prods[std::size_t(i)]->done_within(kHang));
    CHECK(prods[std::size_t(i)]->rc() == DSS_SUCCESS);
    for (int j = 0; j < P; ++j) {
      if (recs[std::size_t(j)].calls() == 0) {
        INFO("producer " << j << " must still be blocked");
        CHECK_FALSE(prods[std::size_t(j)]->done());
      }
    }
  }
  for (auto& r : recs) CHECK(r.calls() == 1);
}

TEST_CASE("blocking: unreg cancels only the items of its utilid", "[blocking][cancel]") {
  CancelLog::get().reset();
  Rec qa, qb, ba, bb, pa, pb;  // queued, blocking, parked; of a and b
  pa.decode_result = pb.decode_result = 1;
  HubHandle hub;
  void* a = must_reg(hub.get(), libid(0));
  void* b = must_reg(hub.get(), libid(1));
  Blocked prod_pa(hub.get(), a, &pa, 1);
  Blocked prod_pb(hub.get(), b, &pb, 2);
  // Park pa and pb (they are the two oldest items, in unknown order).
  Wt ta(hub.get(), 0), tbx(hub.get(), 0);
  for (int i = 0; i < 2; ++i) {
    Taken it = must_take(hub.get());
    REQUIRE(decode(hub.get(), it) == 1);
    TicketId t = hub->settle(it, 1);
    REQUIRE(t != 0);
    (it.data == &pa ? ta : tbx).ticket = t;
  }
  REQUIRE(hub->size() == 0);
  REQUIRE(Hub::deliver(a, rec_decode, nullptr, &qa) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(b, rec_decode, nullptr, &qb) == DSS_SUCCESS);
  Blocked prod_ba(hub.get(), a, &ba, 3);
  Blocked prod_bb(hub.get(), b, &bb, 4);
  REQUIRE(Hub::deliver(a, rec_decode, nullptr, &qa) == DSS_SUCCESS);
  REQUIRE(hub->size() == 5);

  CHECK(Hub::unreg(a) == DSS_SUCCESS);
  REQUIRE(prod_pa.prod.done_within(kHang));
  REQUIRE(prod_ba.prod.done_within(kHang));
  CHECK(prod_pa.prod.rc() == DSS_SUCCESS);
  CHECK(prod_ba.prod.rc() == DSS_SUCCESS);
  CHECK(qa.decode_cancelled == 2);
  CHECK(ba.decode_cancelled == 1);
  CHECK(pa.ret_cancelled == 1);
  CHECK(hub->claim(ta.ticket) == nullptr);
  // b's items are untouched and still in order.
  CHECK(qb.calls() == 0);
  CHECK(bb.calls() == 0);
  CHECK(pb.calls() == 1);  // its decode
  CHECK_FALSE(prod_pb.prod.done());
  CHECK_FALSE(prod_bb.prod.done());
  REQUIRE(hub->size() == 2);
  Taken it = must_take(hub.get());
  CHECK(it.data == &qb);
  hub->finish(it);  // not decoded: ended as if its decoder raised
  it = must_take(hub.get());
  CHECK(it.data == &bb);
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  REQUIRE(prod_bb.prod.done_within(kHang));
  CHECK(hub->pending(tbx.ticket));
  Blocking* claimed = hub->claim(tbx.ticket);
  REQUIRE(claimed != nullptr);
  tbx.ticket = 0;
  CHECK(claimed->data == &pb);
  hub->call_return(claimed, fake_L(), 0);
  hub->finish_returned(claimed);
  REQUIRE(prod_pb.prod.done_within(kHang));
  CHECK(pb.returned == 1);
  CHECK(pb.calls() == 2);
  CHECK(CancelLog::get().total() == 0);
}
