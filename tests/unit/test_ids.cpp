// Stale and garbage utilids: rejected with INVALID_UTILID, never
// dereferenced, nothing queued, no callback called.
#include "helpers.hpp"

#include <cstdint>
#include <random>

using namespace ut;

namespace {

void* as_id(std::uint64_t v) { return reinterpret_cast<void*>(std::uintptr_t(v)); }

// Ids that were never handed out: NULL, small integers, random 64-bit
// values, addresses of live objects, neighbours of the live ids.
std::vector<void*> garbage_ids(const std::vector<void*>& live) {
  std::vector<void*> ids;
  ids.push_back(nullptr);
  for (std::uint64_t v = 1; v <= 64; ++v) ids.push_back(as_id(v));
  for (std::uint64_t v : {std::uint64_t(0xdeadbeef), std::uint64_t(0x5d55000),
                          ~std::uint64_t(0), ~std::uint64_t(0) - 1,
                          std::uint64_t(1) << 63, std::uint64_t(0x7fffffffffffffff)})
    ids.push_back(as_id(v));
  static int on_data;
  int on_stack = 0;
  ids.push_back(&on_data);
  ids.push_back(&on_stack);
  std::mt19937_64 rng(20240611);
  for (int i = 0; i < 2000; ++i) ids.push_back(as_id(rng()));
  for (void* u : live) {
    ids.push_back(as_id(dss::id_of(u) + 1000003));
    ids.push_back(as_id(dss::id_of(u) ^ (std::uint64_t(1) << 40)));
  }
  std::vector<void*> out;
  for (void* g : ids) {
    bool is_live = false;
    for (void* u : live) is_live |= g == u;
    if (!is_live) out.push_back(g);
  }
  return out;
}

}  // namespace

TEST_CASE("ids: garbage utilids are rejected by deliver and unreg", "[ids]") {
  CancelLog::get().reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  for (void* g : garbage_ids({u})) {
    INFO("utilid " << g);
    REQUIRE(Hub::deliver(g, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
    REQUIRE(Hub::unreg(g) == DSS_ERR_INVALID_UTILID);
  }
  CHECK(hub->size() == 0);
  CHECK(r.calls() == 0);
  // The live registration is untouched.
  int err = 0;
  CHECK(hub->getutilid(libid(0), &err) == u);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->size() == 1);
  CHECK(CancelLog::get().total() == 0);
}

TEST_CASE("ids: a blocking deliver to a garbage utilid returns at once", "[ids]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  for (void* g : {as_id(0), as_id(1), as_id(0xdeadbeef), as_id(~std::uint64_t(0))}) {
    Producer p(g, rec_decode, rec_ret, &r);
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_INVALID_UTILID);
  }
  // Even with a NULL decoder, as long as the id is unknown.
  Producer p(as_id(7), nullptr, rec_ret, &r);
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() < DSS_SUCCESS);
  CHECK(hub->size() == 0);
  CHECK(r.calls() == 0);
  (void)u;
}

TEST_CASE("ids: deliver with a NULL decoder is refused", "[ids]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  CHECK(Hub::deliver(u, nullptr, nullptr, &r) == DSS_ERR_NO_DECODE_PROVIDED);
  CHECK(hub->size() == 0);
  // Blocking: refused too, and it does not block.
  Producer p(u, nullptr, rec_ret, &r);
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_ERR_NO_DECODE_PROVIDED);
  CHECK(hub->size() == 0);
  CHECK(r.calls() == 0);
  // The registration is still usable.
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->size() == 1);
}

TEST_CASE("ids: an unregistered utilid is stale; unreg twice", "[ids]") {
  CancelLog::get().reset();
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  void* keep = must_reg(hub.get(), libid(1));
  CHECK(Hub::unreg(u) == DSS_SUCCESS);
  CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
  CHECK(Hub::deliver(u, nullptr, nullptr, &r) == DSS_ERR_INVALID_UTILID);
  {
    Producer p(u, rec_decode, rec_ret, &r);
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_INVALID_UTILID);
  }
  CHECK(hub->size() == 0);
  CHECK(r.calls() == 0);
  // The other registration of the same hub still works.
  CHECK(Hub::deliver(keep, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->size() == 1);
  hub->close();
  // Only 'keep' was registered at close.
  CHECK(CancelLog::get().total() == 1);
  CHECK(CancelLog::get().count(keep) == 1);
  CHECK(r.decode_cancelled == 1);
}

TEST_CASE("ids: utilids of a closed hub, and of a freed hub, are stale", "[ids]") {
  CancelLog::get().reset();
  Hub* hub = Hub::create();
  REQUIRE(hub != nullptr);
  void* a = must_reg(hub, libid(0), cancel_unreg);
  void* b = must_reg(hub, libid(1), cancel_record);
  hub->close();
  Rec r;
  for (void* u : {a, b}) {
    int rc = Hub::deliver(u, rec_decode, nullptr, &r);
    CHECK((rc == DSS_ERR_INVALID_UTILID || rc == DSS_ERR_NOT_STARTED));
    CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  }
  hub->unref();  // the hub is freed now: its ids must not reach it
  for (void* u : {a, b}) {
    CHECK(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
    CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
    Producer p(u, rec_decode, rec_ret, &r);
    REQUIRE(p.done_within(kHang));
    CHECK(p.rc() == DSS_ERR_INVALID_UTILID);
  }
  CHECK(r.calls() == 0);
  CHECK(CancelLog::get().total() == 2);
}
