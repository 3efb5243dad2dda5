// Allocation: the queue's blocks, allocation failure, and deliveries caught
// between their id lookup and their queuing.
//
// This file replaces the global nothrow operator new, plain and over-aligned
// (replaceable allocation functions, [new.delete.single]) for the whole test
// program. The
// core allocates with it only in Hub::create and, in deliver, for a queue
// block (Hub::kEntries entries, one 8 KiB malloc chunk) when the tail block
// is full and there is no spare one: never per item. A thread can ask for its next nothrow
// allocations to fail, or to be counted.
//
// It also interposes clock_gettime(2) for the whole test program (every
// call goes to the system call). deliver2 with a timeout reads the clock
// once it has looked the utilid up and taken a hub reference, before it
// takes the hub's lock; a thread can ask to stop at a gate at its next clock
// read. That parks a deliver2 exactly between lookup and queuing, so that a
// concurrent unreg or close can be run to completion in that window,
// deterministically. (The previous core allocated each fire-and-forget item
// in that window, and the gate used to be on that allocation.)
#include "helpers.hpp"

#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <condition_variable>
#include <new>

using namespace ut;

namespace alloc_hook {

enum class Mode { normal, fail, count };
thread_local Mode mode = Mode::normal;
thread_local int counted = 0;  // nothrow allocations seen in Mode::count

}  // namespace alloc_hook

namespace clock_hook {

thread_local bool gate = false;  // stop at this thread's next clock read

std::mutex mu;
std::condition_variable cv;
bool at_gate = false;  // a thread is waiting at the gate
bool gate_open = false;

void reset() {
  std::lock_guard<std::mutex> lock(mu);
  at_gate = false;
  gate_open = false;
}

void open_gate() {
  std::lock_guard<std::mutex> lock(mu);
  gate_open = true;
  cv.notify_all();
}

bool wait_at_gate() {
  return wait_until([] {
    std::lock_guard<std::mutex> lock(mu);
    return at_gate;
  });
}

void stop() {
  gate = false;  // one stop only (the wait below reads the clock too)
  std::unique_lock<std::mutex> lock(mu);
  at_gate = true;
  cv.notify_all();
  // Bounded, so that a broken test cannot hang the program.
  cv.wait_for(lock, kHang, [] { return gate_open; });
}

}  // namespace clock_hook

void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  using alloc_hook::Mode;
  if (alloc_hook::mode == Mode::fail) return nullptr;
  if (alloc_hook::mode == Mode::count) ++alloc_hook::counted;
  try {
    return ::operator new(n);
  } catch (...) {
    return nullptr;
  }
}

// The over-aligned form (Hub is aligned to cache lines).
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  using alloc_hook::Mode;
  if (alloc_hook::mode == Mode::fail) return nullptr;
  if (alloc_hook::mode == Mode::count) ++alloc_hook::counted;
  try {
    return ::operator new(n, al);
  } catch (...) {
    return nullptr;
  }
}

extern "C" int clock_gettime(clockid_t clk, struct timespec* ts) noexcept {
  if (clock_hook::gate) clock_hook::stop();
  return int(::syscall(SYS_clock_gettime, clk, ts));
}

namespace {

// Runs one deliver on a thread whose nothrow allocations behave as `m`:
// deliver(u, rec_decode, ret, r).
struct HookedDeliver {
  std::atomic<int> rc{0};
  std::atomic<bool> done{false};
  std::thread t;
  HookedDeliver(alloc_hook::Mode m, void* u, Rec* r, DSS_return_1v0_t ret = nullptr) {
    t = std::thread([this, m, u, r, ret] {
      alloc_hook::mode = m;
      rc = Hub::deliver(u, rec_decode, ret, r);
      alloc_hook::mode = alloc_hook::Mode::normal;
      done = true;
    });
  }
  ~HookedDeliver() {
    if (wait_until([this] { return done.load(); })) t.join();
    else t.detach();  // a failed test: do not hang on it
  }
};

// Runs a blocking deliver2 (with a timeout, so that it reads the clock)
// that stops at the clock gate, between lookup and queuing. (A blocking
// one: a fire-and-forget delivery looks its id up and queues under the id
// table's lock, so no unreg or close can come in between.)
struct GatedDeliver {
  std::atomic<int> rc{0};
  std::atomic<bool> done{false};
  std::thread t;
  GatedDeliver(void* u, Rec* r) {
    t = std::thread([this, u, r] {
      clock_hook::gate = true;
      rc = Hub::deliver2(u, rec_decode, rec_ret, r, 0, 60000);
      clock_hook::gate = false;
      done = true;
    });
  }
  ~GatedDeliver() {
    clock_hook::open_gate();
    t.join();
  }
};

}  // namespace

TEST_CASE("alloc: items need no allocation until a block fills; a block that "
          "cannot be allocated refuses the item", "[alloc]") {
  const int E = int(Hub::kEntries);
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  alloc_hook::counted = 0;
  alloc_hook::mode = alloc_hook::Mode::count;
  int rc = Hub::deliver(u, rec_decode, nullptr, &r);  // the first block
  alloc_hook::mode = alloc_hook::Mode::normal;
  REQUIRE(rc == DSS_SUCCESS);
  CHECK(alloc_hook::counted == 1);

  // The rest of the block takes the next items, fire-and-forget or blocking,
  // with every allocation failing.
  int failed = 0;
  alloc_hook::mode = alloc_hook::Mode::fail;
  for (int i = 1; i < E - 1; ++i)
    failed += Hub::deliver(u, rec_decode, nullptr, &r) != DSS_SUCCESS;
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(failed == 0);
  REQUIRE(hub->size() == std::size_t(E - 1));
  // A blocking item lives on the producer's stack; its entry, in the block.
  HookedDeliver blocked(alloc_hook::Mode::fail, u, &r, rec_ret);
  REQUIRE(wait_until([&] { return hub->size() == std::size_t(E); }));

  // The block is full: the next item needs a new one, and cannot have it.
  alloc_hook::mode = alloc_hook::Mode::fail;
  rc = Hub::deliver(u, rec_decode, nullptr, &r);
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(rc == DSS_ERR_OUT_OF_MEMORY);
  CHECK(hub->size() == std::size_t(E));
  {
    // Refused at once, not blocked.
    HookedDeliver refused(alloc_hook::Mode::fail, u, &r, rec_ret);
    REQUIRE(wait_until([&] { return refused.done.load(); }));
    CHECK(refused.rc == DSS_ERR_OUT_OF_MEMORY);
  }
  CHECK(hub->size() == std::size_t(E));
  CHECK(r.calls() == 0);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->size() == std::size_t(E + 1));

  // All there, in order: E - 1 fire-and-forget, the blocking one, the last.
  for (int i = 0; i < E + 1; ++i) {
    Taken it = must_take(hub.get());
    CHECK((it.blk != nullptr) == (i == E - 1));
    hub->finish(it);
  }
  CHECK_FALSE(hub->take());
  REQUIRE(wait_until([&] { return blocked.done.load(); }));
  CHECK(blocked.rc == DSS_SUCCESS);
  CHECK(r.calls() == 0);
}

TEST_CASE("alloc: after warm-up the queue allocates nothing per item; it keeps "
          "one spare block", "[alloc]") {
  const std::size_t E = Hub::kEntries;
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  // Allocations made while n items are delivered, then all taken.
  auto round = [&](std::size_t n) {
    int failed = 0, missing = 0;
    alloc_hook::counted = 0;
    alloc_hook::mode = alloc_hook::Mode::count;
    for (std::size_t i = 0; i < n; ++i)
      failed += Hub::deliver(u, rec_decode, nullptr, &r) != DSS_SUCCESS;
    for (std::size_t i = 0; i < n; ++i) {
      Taken it = hub->take();
      if (!it) ++missing;
      else hub->finish(it);
    }
    missing += hub->take() ? 1 : 0;  // one too many
    alloc_hook::mode = alloc_hook::Mode::normal;
    CHECK(failed == 0);
    CHECK(missing == 0);
    CHECK(hub->size() == 0);
    return alloc_hook::counted;
  };
  CHECK(round(1) == 1);  // the first block
  CHECK(round(1) == 0);
  CHECK(round(E) == 0);  // the block starts over once passed
  // Two blocks: the second is made once, then kept as the spare.
  CHECK(round(2 * E) == 1);
  CHECK(round(2 * E) == 0);
  CHECK(round(2 * E - 7) == 0);
  CHECK(round(4 * E - 20) == 2);  // 4 blocks: the tail's and the spare are there
  // Each round of 5 blocks allocates the 3 that the tail's and the one spare
  // block do not cover: the blocks freed beyond the spare are not kept.
  for (int i = 0; i < 3; ++i) CHECK(round(5 * E) == 3);
  CHECK(round(2 * E) == 0);

  // One item at a time (deliver, take): never an allocation.
  int failed = 0;
  alloc_hook::counted = 0;
  alloc_hook::mode = alloc_hook::Mode::count;
  for (int i = 0; i < 20000; ++i) {
    failed += Hub::deliver(u, rec_decode, nullptr, &r) != DSS_SUCCESS;
    Taken it = hub->take();
    if (!it) ++failed;
    else hub->finish(it);
  }
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(failed == 0);
  CHECK(alloc_hook::counted == 0);
  CHECK(r.calls() == 0);
}

TEST_CASE("alloc: Hub::create reports allocation failure with nullptr", "[alloc]") {
  // Hubs are kept for reuse once released: take those first, so that the
  // next create has to allocate.
  std::vector<Hub*> reused;
  while (Hub::pooled() > 0) reused.push_back(Hub::create());
  alloc_hook::mode = alloc_hook::Mode::fail;
  Hub* h = Hub::create();
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(h == nullptr);
  if (h) reused.push_back(h);
  for (Hub* r : reused) {
    r->close();
    r->unref();
  }
}

TEST_CASE("alloc: a released hub is reused, reset, by the next create", "[alloc]") {
  Rec r;
  Hub* a = Hub::create();
  REQUIRE(a != nullptr);
  void* u = must_reg(a, libid(0));
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  a->close();
  std::size_t before = Hub::pooled();
  a->unref();
  CHECK(Hub::pooled() == before + 1);
  Hub* b = Hub::create();
  CHECK(b == a);
  CHECK(Hub::pooled() == before);
  CHECK(b->state() == Hub::State::running);
  CHECK(b->size() == 0);
  dss::Stats s = b->stats();
  CHECK(s.delivered == 0);
  CHECK(s.cancelled == 0);
  // The old registration's id stays dead in the new life.
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
  CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  void* v = must_reg(b, libid(0));
  CHECK(v != u);
  CHECK(Hub::deliver(v, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(b->size() == 1);
  b->close();  // its item ends by cancellation
  CHECK(r.calls() == 2);
  b->unref();
}

TEST_CASE("race: a deliver that looked its id up before unreg but queues after it "
          "is refused", "[alloc][race][cancel]") {
  clock_hook::reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  {
    GatedDeliver d(u, &r);
    REQUIRE(clock_hook::wait_at_gate());  // past the lookup, before the lock
    CHECK(Hub::unreg(u) == DSS_SUCCESS);
    CHECK(hub->size() == 0);
    clock_hook::open_gate();
    REQUIRE(wait_until([&] { return d.done.load(); }));
    // It must not queue an item nobody will ever cancel.
    CHECK(d.rc == DSS_ERR_INVALID_UTILID);
  }
  CHECK(hub->size() == 0);
  CHECK_FALSE(hub->take());
  CHECK(r.calls() == 0);
}

TEST_CASE("race: a deliver caught before queuing while its hub is closed and "
          "released", "[alloc][race][close]") {
  clock_hook::reset();
  CancelLog::get().reset();
  Rec r;
  Hub* hub = Hub::create();
  REQUIRE(hub != nullptr);
  void* u = must_reg(hub, libid(0), cancel_record);
  {
    GatedDeliver d(u, &r);
    REQUIRE(clock_hook::wait_at_gate());
    hub->close();
    CHECK(CancelLog::get().count(u) == 1);
    // The owner lets go; the delivering thread still holds a reference, so
    // the hub must outlive its deliver (ASan checks the use after free).
    hub->unref();
    clock_hook::open_gate();
    REQUIRE(wait_until([&] { return d.done.load(); }));
    CHECK((d.rc == DSS_ERR_NOT_STARTED || d.rc == DSS_ERR_INVALID_UTILID));
  }
  CHECK(r.calls() == 0);
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
}
