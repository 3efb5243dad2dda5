// test_channel.cpp -- the core channel (src/core/channel.*): buffered,
// unbounded and rendezvous channels, waiting operations and choices of
// them (one suspension, several waiters), close, cancel; and a stress run
// in which every message is received exactly once.
#include "helpers.hpp"

#include "channel.hpp"

#include <condition_variable>
#include <cstring>
#include <vector>

using dss::Channel;
using dss::Message;
using dss::Suspension;
using dss::Waiter;
using Res = Channel::Res;
using End = Suspension::End;

namespace {

Message msg(long v) {
  Message m;
  REQUIRE(m.append(&v, sizeof v));
  return m;
}

// No assertions: also called on the stress test's threads.
long val(const Message& m) {
  long v = -1;
  if (m.size() == sizeof v) std::memcpy(&v, m.data(), sizeof v);
  return v;
}

Message raw_msg(long v) {
  Message m;
  m.append(&v, sizeof v);
  return m;
}

// A blocked party: counts its wake-ups, and can sleep until woken.
struct Party {
  std::mutex mu;
  std::condition_variable cv;
  int wakes = 0;
  Suspension* s;
  Party() : s(Suspension::create(&Party::wake, this)) {}  // (no assertion: threads)
  ~Party() {
    s->quiesce();  // a wake under way still touches this party
    s->unref();
  }
  static void wake(Suspension*, void* ctx) {
    Party* p = static_cast<Party*>(ctx);
    std::lock_guard<std::mutex> lock(p->mu);
    ++p->wakes;
    p->cv.notify_all();
  }
  bool woken_within(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, d, [this] { return wakes > 0; });
  }
};

struct Chan {
  Channel* c;
  explicit Chan(std::size_t cap) : c(Channel::create(cap)) { REQUIRE(c); }
  ~Chan() { c->unref(); }
  Channel* operator->() { return c; }
};

}  // namespace

TEST_CASE("channel: buffered put/get is FIFO, blocks when full or empty", "[channel]") {
  Chan ch(2);
  Message a = msg(1), b = msg(2), c = msg(3), out;
  CHECK(ch->get_now(&out) == Res::blocked);
  CHECK(ch->put_now(a) == Res::done);
  CHECK(ch->put_now(b) == Res::done);
  CHECK(ch->put_now(c) == Res::blocked);
  CHECK(val(c) == 3);  // kept by the caller
  CHECK(ch->len() == 2);
  REQUIRE(ch->get_now(&out) == Res::done);
  CHECK(val(out) == 1);
  REQUIRE(ch->get_now(&out) == Res::done);
  CHECK(val(out) == 2);
  CHECK(ch->len() == 0);
}

TEST_CASE("channel: a waiting put moves into the buffer when a get makes room",
          "[channel]") {
  Chan ch(1);
  Message a = msg(1);
  REQUIRE(ch->put_now(a) == Res::done);
  Party p;
  Waiter w;
  w.susp = p.s;
  w.msg = msg(2);
  REQUIRE(ch->put_wait(&w) == Res::blocked);
  CHECK(ch->len() == 2);
  Message out;
  REQUIRE(ch->get_now(&out) == Res::done);
  CHECK(val(out) == 1);
  CHECK(p.wakes == 1);
  CHECK(p.s->end() == End::done);
  CHECK_FALSE(w.linked);
  REQUIRE(ch->get_now(&out) == Res::done);
  CHECK(val(out) == 2);
}

TEST_CASE("channel: rendezvous completes a waiting get and a waiting put", "[channel]") {
  Chan ch(0);
  Message m = msg(7), out;
  CHECK(ch->put_now(m) == Res::blocked);
  Party g;
  Waiter gw;
  gw.susp = g.s;
  gw.index = 3;
  REQUIRE(ch->get_wait(&gw) == Res::blocked);
  REQUIRE(ch->put_now(m) == Res::done);
  CHECK(g.wakes == 1);
  CHECK(g.s->end() == End::done);
  CHECK(g.s->index() == 3);
  CHECK(val(g.s->message()) == 7);

  Party p;
  Waiter pw;
  pw.susp = p.s;
  pw.msg = msg(8);
  REQUIRE(ch->put_wait(&pw) == Res::blocked);
  CHECK(ch->len() == 1);
  REQUIRE(ch->get_now(&out) == Res::done);
  CHECK(val(out) == 8);
  CHECK(p.wakes == 1);
  CHECK(ch->len() == 0);
}

TEST_CASE("channel: a choice of two gets completes once; the other waiter is dropped",
          "[channel]") {
  Chan c1(0), c2(0);
  Party g;
  Waiter w1, w2;
  w1.susp = w2.susp = g.s;
  w1.index = 1;
  w2.index = 2;
  REQUIRE(c1->get_wait(&w1) == Res::blocked);
  REQUIRE(c2->get_wait(&w2) == Res::blocked);
  Message m = msg(5);
  REQUIRE(c2->put_now(m) == Res::done);
  CHECK(g.s->end() == End::done);
  CHECK(g.s->index() == 2);
  Message m2 = msg(6);
  CHECK(c1->put_now(m2) == Res::blocked);  // w1 is stale: not matched
  CHECK_FALSE(w1.linked);
  c1->unwait(&w1);
  c2->unwait(&w2);
  CHECK(g.wakes == 1);
}

TEST_CASE("channel: a choice never completes against itself", "[channel]") {
  Chan ch(0);
  Party x;
  Waiter pw, gw;
  pw.susp = gw.susp = x.s;
  pw.msg = msg(1);
  gw.index = 1;
  REQUIRE(ch->put_wait(&pw) == Res::blocked);
  REQUIRE(ch->get_wait(&gw) == Res::blocked);
  CHECK(x.s->end() == End::none);
  Message out;
  REQUIRE(ch->get_now(&out) == Res::done);  // someone else takes the put
  CHECK(val(out) == 1);
  CHECK(x.s->index() == 0);
  ch->unwait(&gw);
  CHECK_FALSE(gw.linked);
}

TEST_CASE("channel: close ends waiters with closed; gets drain the buffer first",
          "[channel]") {
  Chan b(4), r(0);
  Message m = msg(1), out;
  REQUIRE(b->put_now(m) == Res::done);
  Party g, p;
  Waiter gw, pw;
  gw.susp = g.s;
  pw.susp = p.s;
  pw.msg = msg(2);
  REQUIRE(r->get_wait(&gw) == Res::blocked);
  r->close();
  CHECK(g.s->end() == End::closed);
  CHECK(g.wakes == 1);
  b->close();
  CHECK(b->closed());
  Message m3 = msg(3);
  CHECK(b->put_now(m3) == Res::closed);
  REQUIRE(b->get_now(&out) == Res::done);
  CHECK(val(out) == 1);
  CHECK(b->get_now(&out) == Res::closed);
  // A wait on a closed channel ends at once, for its suspension too.
  CHECK(r->put_wait(&pw) == Res::closed);
  CHECK(p.s->end() == End::closed);
  CHECK(p.wakes == 0);  // ended by its own call: nobody to wake
}

TEST_CASE("channel: a cancelled waiter is never completed", "[channel]") {
  Chan ch(0);
  Party g;
  Waiter gw;
  gw.susp = g.s;
  REQUIRE(ch->get_wait(&gw) == Res::blocked);
  REQUIRE(g.s->cancel());
  Message m = msg(1);
  CHECK(ch->put_now(m) == Res::blocked);
  CHECK(g.s->end() == End::cancelled);
  CHECK_FALSE(g.s->cancel());
  CHECK(g.wakes == 0);
  ch->unwait(&gw);
}

TEST_CASE("channel: many putters and choosing getters on threads: each message once",
          "[channel][stress]") {
  for (std::size_t cap : {std::size_t(0), std::size_t(1), std::size_t(16)}) {
    Chan c1(cap), c2(cap);
    const int kPut = 4, kGet = 3, kEach = 2000;
    std::vector<std::atomic<int>> seen(kPut * kEach);
    std::atomic<int> got{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kPut; ++t)
      ts.emplace_back([&, t] {
        Channel* c = (t % 2 ? c1 : c2).c;
        for (int i = 0; i < kEach; ++i) {
          Party p;
          Waiter w;
          w.susp = p.s;
          w.msg = raw_msg(t * kEach + i);
          Res r = c->put_wait(&w);
          if (r == Res::blocked && !p.woken_within(ut::kHang)) return;
          c->unwait(&w);
        }
      });
    for (int t = 0; t < kGet; ++t)
      ts.emplace_back([&] {
        while (got.load() < kPut * kEach) {
          Party p;
          Waiter w1, w2;
          w1.susp = w2.susp = p.s;
          w2.index = 1;
          Res r = c1->get_wait(&w1);
          if (r == Res::blocked) r = c2->get_wait(&w2);
          if (p.s->end() == End::none &&
              !p.woken_within(std::chrono::milliseconds(20)) && p.s->cancel()) {
            c1->unwait(&w1);
            c2->unwait(&w2);
            continue;  // nothing came: look at the count again
          }
          c1->unwait(&w1);
          c2->unwait(&w2);
          if (p.s->end() != End::done) continue;
          long v = val(p.s->message());
          if (v >= 0 && v < long(seen.size())) seen[std::size_t(v)].fetch_add(1);
          got.fetch_add(1);
        }
      });
    for (auto& t : ts) t.join();
    int once = 0, other = 0;
    for (auto& s : seen) (s.load() == 1 ? once : other)++;
    CHECK(once == kPut * kEach);
    CHECK(other == 0);
    CHECK(c1->len() == 0);
    CHECK(c2->len() == 0);
  }
}

namespace {
// A getter that runs in the middle of close(): close() ends its waiters a
// batch at a time, and the first wake-up of its first batch takes a value.
struct CloseProbe {
  Channel* ch;
  std::atomic<int> wakes{0};
  std::atomic<bool> got{false};
};
CloseProbe* g_probe = nullptr;
void probe_wake(Suspension*, void*) {
  if (g_probe->wakes.fetch_add(1) == 0) {
    Message out;
    if (g_probe->ch->get_now(&out) == Res::done) g_probe->got = true;
  }
}
}  // namespace

TEST_CASE("channel: once close() began, no waiting put completes (more waiters than a batch)",
          "[channel]") {
  Chan ch(1);
  CloseProbe probe;
  probe.ch = ch.c;
  g_probe = &probe;
  Message first = msg(1);
  REQUIRE(ch->put_now(first) == Res::done);  // full
  const int kN = 40;  // more than close()'s batch of 32
  std::vector<Suspension*> ss;
  std::vector<Waiter> ws(kN);
  for (int i = 0; i < kN; ++i) {
    ss.push_back(Suspension::create(&probe_wake, nullptr));
    ws[i].susp = ss.back();
    ws[i].msg = msg(100 + i);
    REQUIRE(ch->put_wait(&ws[i]) == Res::blocked);
  }
  ch->close();
  CHECK(probe.got);  // the buffered value, taken during close()
  int closed = 0;
  for (Suspension* s : ss) closed += s->end() == End::closed;
  CHECK(closed == kN);
  Message out;
  CHECK(ch->get_now(&out) == Res::closed);
  for (int i = 0; i < kN; ++i) {
    ch->unwait(&ws[i]);
    ss[i]->unref();
  }
}
