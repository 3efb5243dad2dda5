// test_thread_put.cpp -- a C thread's put (src/core/thread_put.*, behind
// the 2v2 channel_put): at once, full without waiting, a timeout that
// withdraws the message, released by a get or by close, and many threads
// with short timeouts racing getters: every message is either received
// exactly once or reported timed out, never both, never neither.
#include "helpers.hpp"

#include "channel.hpp"
#include "thread_put.hpp"

#include <cstring>
#include <vector>

using dss::Channel;
using dss::Message;
using dss::ThreadPut;
using Res = Channel::Res;

namespace {

Message raw_msg(long v) {
  Message m;
  m.append(&v, sizeof v);
  return m;
}

long val(const Message& m) {
  long v = -1;
  if (m.size() == sizeof v) std::memcpy(&v, m.data(), sizeof v);
  return v;
}

struct Chan {
  Channel* c;
  explicit Chan(std::size_t cap) : c(Channel::create(cap)) { REQUIRE(c); }
  ~Chan() { c->unref(); }
  Channel* operator->() { return c; }
};

ThreadPut put(Channel* c, long v, long long timeout_ms) {
  Message m = raw_msg(v);
  return dss::put_from_thread(c, m, timeout_ms);
}

// Waits (bounded) until c holds n (buffered plus puts waiting).
bool len_reaches(Channel* c, std::size_t n) {
  auto end = std::chrono::steady_clock::now() + ut::kHang;
  while (c->len() != n)
    if (std::chrono::steady_clock::now() > end) return false;
    else std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return true;
}

long get(Channel* c) {
  Message out;
  return c->get_now(&out) == Res::done ? val(out) : -1;
}

}  // namespace

TEST_CASE("thread put: buffered at once; full with no wait; closed", "[thread_put]") {
  Chan c(2);
  CHECK(put(c.c, 1, -1) == ThreadPut::done);
  CHECK(put(c.c, 2, 0) == ThreadPut::done);
  CHECK(put(c.c, 3, 0) == ThreadPut::full);
  CHECK(c->len() == 2);
  CHECK(get(c.c) == 1);
  CHECK(get(c.c) == 2);
  c->close();
  CHECK(put(c.c, 4, -1) == ThreadPut::closed);
  CHECK(put(c.c, 4, 0) == ThreadPut::closed);
  CHECK(c->len() == 0);
}

TEST_CASE("thread put: a timeout withdraws the message, after at least the timeout",
          "[thread_put]") {
  for (std::size_t cap : {std::size_t(0), std::size_t(1)}) {
    Chan c(cap);
    if (cap) REQUIRE(put(c.c, 1, 0) == ThreadPut::done);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(put(c.c, 2, 60) == ThreadPut::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(60));
    CHECK(c->len() == cap);  // nothing of the withdrawn put
    if (cap) CHECK(get(c.c) == 1);
    CHECK(get(c.c) == -1);
  }
}

TEST_CASE("thread put: a waiting put completes when a get makes room or takes it",
          "[thread_put]") {
  for (std::size_t cap : {std::size_t(0), std::size_t(1)}) {
    Chan c(cap);
    if (cap) REQUIRE(put(c.c, 1, 0) == ThreadPut::done);
    std::atomic<int> r{-1};
    std::thread t([&] { r = int(put(c.c, 2, -1)); });
    REQUIRE(len_reaches(c.c, cap + 1));  // waiting
    CHECK(r.load() == -1);
    if (cap) CHECK(get(c.c) == 1);
    CHECK(get(c.c) == 2);  // a rendezvous takes it from the waiting put
    t.join();
    CHECK(r.load() == int(ThreadPut::done));
  }
}

TEST_CASE("thread put: close releases a waiting put with closed; nothing sent",
          "[thread_put]") {
  Chan c(1);
  REQUIRE(put(c.c, 1, 0) == ThreadPut::done);
  std::atomic<int> r{-1}, r2{-1};
  std::thread t([&] { r = int(put(c.c, 2, -1)); });
  std::thread t2([&] { r2 = int(put(c.c, 3, 100000)); });  // a timed one too
  REQUIRE(len_reaches(c.c, 3));
  c->close();
  t.join();
  t2.join();
  CHECK(r.load() == int(ThreadPut::closed));
  CHECK(r2.load() == int(ThreadPut::closed));
  CHECK(get(c.c) == 1);
  CHECK(get(c.c) == -1);
  CHECK(c->len() == 0);
}

TEST_CASE("thread put: many threads with short timeouts against getters: each message "
          "received once or timed out, never both", "[thread_put][stress]") {
  for (std::size_t cap : {std::size_t(0), std::size_t(4)}) {
    Chan c(cap);
    const int kPut = 4, kEach = 1500;
    std::vector<std::atomic<int>> seen(kPut * kEach);
    std::vector<int> outcome(kPut * kEach, -1);  // each slot written by one thread
    std::atomic<int> putters{kPut};
    std::vector<std::thread> ts;
    for (int t = 0; t < kPut; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          long v = t * kEach + i;
          // Mostly short timeouts (they race the getters), some without limit.
          outcome[std::size_t(v)] = int(put(c.c, v, i % 5 == 0 ? -1 : 1));
        }
        putters.fetch_sub(1);
      });
    std::vector<long> last(kPut, -1);
    std::atomic<bool> fifo{true};
    std::thread getter([&] {
      // A plain polling getter: get_now until every putter is done and
      // nothing is left (a rendezvous only completes against waiting puts).
      for (;;) {
        Message out;
        Res r = c->get_now(&out);
        if (r == Res::done) {
          long v = val(out);
          if (v >= 0 && v < long(seen.size())) {
            seen[std::size_t(v)].fetch_add(1);
            int p = int(v / kEach);
            if (v <= last[std::size_t(p)]) fifo = false;  // one producer's order
            last[std::size_t(p)] = v;
          }
        } else if (putters.load() == 0 && c->len() == 0) {
          return;
        } else {
          std::this_thread::yield();
        }
      }
    });
    for (auto& t : ts) t.join();
    getter.join();
    int done_once = 0, timedout_unseen = 0, bad = 0, timeouts = 0;
    for (std::size_t v = 0; v < seen.size(); ++v) {
      int s = seen[v].load();
      if (outcome[v] == int(ThreadPut::done) && s == 1) done_once++;
      else if (outcome[v] == int(ThreadPut::timeout) && s == 0) timedout_unseen++;
      else bad++;
      if (outcome[v] == int(ThreadPut::timeout)) timeouts++;
    }
    CHECK(bad == 0);
    CHECK(done_once + timedout_unseen == kPut * kEach);
    CHECK(fifo.load());
    CHECK(c->len() == 0);
    INFO("capacity " << cap << ": " << timeouts << " timed out");
  }
}
