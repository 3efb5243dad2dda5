// Allocation failure, and deliveries caught between their id lookup and
// their queuing.
//
// This file replaces the global nothrow operator new (a replaceable
// allocation function, [new.delete.single]) for the whole test program. The
// core allocates with it only in Hub::create and for fire-and-forget items
// in deliver, after it has looked the utilid up and taken a hub reference
// but before it takes the hub's lock. A thread can ask for its next nothrow
// allocations to fail, or to stop at a gate: that parks a deliver exactly
// between lookup and queuing, so a concurrent unreg or close can be run to
// completion in that window, deterministically.
#include "helpers.hpp"

#include <condition_variable>
#include <new>

using namespace ut;

namespace alloc_hook {

enum class Mode { normal, fail, gate };
thread_local Mode mode = Mode::normal;

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

}  // namespace alloc_hook

void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  using alloc_hook::Mode;
  if (alloc_hook::mode == Mode::fail) return nullptr;
  if (alloc_hook::mode == Mode::gate) {
    alloc_hook::mode = Mode::normal;  // one stop only
    std::unique_lock<std::mutex> lock(alloc_hook::mu);
    alloc_hook::at_gate = true;
    alloc_hook::cv.notify_all();
    // Bounded, so that a broken test cannot hang the program.
    alloc_hook::cv.wait_for(lock, kHang, [] { return alloc_hook::gate_open; });
  }
  try {
    return ::operator new(n);
  } catch (...) {
    return nullptr;
  }
}

namespace {

// Runs a fire-and-forget deliver on a thread whose nothrow allocations
// behave as `m`.
struct HookedDeliver {
  std::atomic<int> rc{0};
  std::atomic<bool> done{false};
  std::thread t;
  HookedDeliver(alloc_hook::Mode m, void* u, Rec* r) {
    t = std::thread([this, m, u, r] {
      alloc_hook::mode = m;
      rc = Hub::deliver(u, rec_decode, nullptr, r);
      alloc_hook::mode = alloc_hook::Mode::normal;
      done = true;
    });
  }
  ~HookedDeliver() {
    alloc_hook::open_gate();
    t.join();
  }
};

}  // namespace

TEST_CASE("alloc: a fire-and-forget item that cannot be allocated is refused",
          "[alloc]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  alloc_hook::mode = alloc_hook::Mode::fail;
  int rc = Hub::deliver(u, rec_decode, nullptr, &r);
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(rc == DSS_ERR_OUT_OF_MEMORY);
  CHECK(hub->size() == 1);  // only the first one
  CHECK(r.calls() == 0);
  // A blocking item needs no allocation: it lives on the producer's stack.
  std::atomic<int> brc{0};
  std::thread bt([&] {
    alloc_hook::mode = alloc_hook::Mode::fail;
    brc = Hub::deliver(u, rec_decode, rec_ret, &r);
    alloc_hook::mode = alloc_hook::Mode::normal;
  });
  REQUIRE(wait_until([&] { return hub->size() == 2; }));
  hub->finish(must_pop(hub.get()));
  Item* it = must_pop(hub.get());
  CHECK(it->ret == rec_ret);
  hub->finish(it);
  bt.join();
  CHECK(brc == DSS_SUCCESS);
  CHECK(r.calls() == 0);
}

TEST_CASE("alloc: Hub::create reports allocation failure with nullptr", "[alloc]") {
  alloc_hook::mode = alloc_hook::Mode::fail;
  Hub* h = Hub::create();
  alloc_hook::mode = alloc_hook::Mode::normal;
  CHECK(h == nullptr);
  if (h) {
    h->close();
    h->unref();
  }
}

TEST_CASE("race: a deliver that looked its id up before unreg but queues after it "
          "is refused", "[alloc][race][cancel]") {
  alloc_hook::reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  {
    HookedDeliver d(alloc_hook::Mode::gate, u, &r);
    REQUIRE(alloc_hook::wait_at_gate());  // past the lookup, before the lock
    CHECK(Hub::unreg(u) == DSS_SUCCESS);
    CHECK(hub->size() == 0);
    alloc_hook::open_gate();
    REQUIRE(wait_until([&] { return d.done.load(); }));
    // It must not queue an item nobody will ever cancel.
    CHECK(d.rc == DSS_ERR_INVALID_UTILID);
  }
  CHECK(hub->size() == 0);
  CHECK(hub->pop() == nullptr);
  CHECK(r.calls() == 0);
}

TEST_CASE("race: a deliver caught before queuing while its hub is closed and "
          "released", "[alloc][race][close]") {
  alloc_hook::reset();
  CancelLog::get().reset();
  Rec r;
  Hub* hub = Hub::create();
  REQUIRE(hub != nullptr);
  void* u = must_reg(hub, libid(0), cancel_record);
  {
    HookedDeliver d(alloc_hook::Mode::gate, u, &r);
    REQUIRE(alloc_hook::wait_at_gate());
    hub->close();
    CHECK(CancelLog::get().count(u) == 1);
    // The owner lets go; the delivering thread still holds a reference, so
    // the hub must outlive its deliver (ASan checks the use after free).
    hub->unref();
    alloc_hook::open_gate();
    REQUIRE(wait_until([&] { return d.done.load(); }));
    CHECK((d.rc == DSS_ERR_NOT_STARTED || d.rc == DSS_ERR_INVALID_UTILID));
  }
  CHECK(r.calls() == 0);
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
}
