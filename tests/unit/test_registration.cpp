// The registration table: reg, getutilid, unreg and their codes.
#include "helpers.hpp"

#include <set>

using namespace ut;

TEST_CASE("registration: reg returns a utilid that getutilid finds", "[registration]") {
  CancelLog::get().reset();
  HubHandle hub;
  int err = 0;
  void* u = hub->reg(libid(0), cancel_unreg, &err);
  CHECK(err == DSS_SUCCESS);
  REQUIRE(u != nullptr);

  err = 0;
  CHECK(hub->getutilid(libid(0), &err) == u);
  CHECK(err == DSS_SUCCESS);

  // A second library gets its own id.
  err = 0;
  void* u2 = hub->reg(libid(1), cancel_unreg, &err);
  CHECK(err == DSS_SUCCESS);
  REQUIRE(u2 != nullptr);
  CHECK(u2 != u);
  CHECK(hub->getutilid(libid(1), &err) == u2);
  CHECK(hub->getutilid(libid(0), &err) == u);

  // A null libid is just another pointer value.
  void* u3 = hub->reg(nullptr, cancel_unreg, &err);
  CHECK(err == DSS_SUCCESS);
  CHECK(u3 != nullptr);
  CHECK(hub->getutilid(nullptr, &err) == u3);
  CHECK(err == DSS_SUCCESS);
}

TEST_CASE("registration: reg of a registered libid returns the same utilid and "
          "changes nothing", "[registration]") {
  CancelLog::get().reset();
  void* u = nullptr;
  {
    HubHandle hub;
    u = must_reg(hub.get(), libid(0), cancel_unreg);
    int err = 0;
    CHECK(hub->reg(libid(0), cancel_unreg, &err) == u);
    CHECK(err == DSS_ERR_ALREADY_REGISTERED);
    // Another cancel function does not replace the first one.
    err = 0;
    CHECK(hub->reg(libid(0), cancel_record, &err) == u);
    CHECK(err == DSS_ERR_ALREADY_REGISTERED);
    CHECK(hub->getutilid(libid(0), &err) == u);
    CHECK(err == DSS_SUCCESS);
  }  // close: the original cancel_unreg runs, once
  CHECK(CancelLog::get().count(u) == 1);
  CHECK(CancelLog::get().total() == 1);
  REQUIRE(CancelLog::get().unreg_rcs.size() == 1);
  CHECK(CancelLog::get().unreg_rcs[0] == DSS_SUCCESS);
}

TEST_CASE("registration: reg without a cancel function is refused", "[registration]") {
  HubHandle hub;
  int err = 0;
  CHECK(hub->reg(libid(0), nullptr, &err) == nullptr);
  CHECK(err == DSS_ERR_NO_CANCEL_PROVIDED);
  // Nothing was registered.
  err = 0;
  CHECK(hub->getutilid(libid(0), &err) == nullptr);
  CHECK(err == DSS_ERR_UNKNOWN_LIB);
  CHECK(hub->reg(libid(0), nullptr, nullptr) == nullptr);
  CHECK(hub->getutilid(libid(0), &err) == nullptr);
  CHECK(err == DSS_ERR_UNKNOWN_LIB);
}

TEST_CASE("registration: getutilid of an unknown libid", "[registration]") {
  HubHandle hub;
  int err = 0;
  CHECK(hub->getutilid(libid(5), &err) == nullptr);
  CHECK(err == DSS_ERR_UNKNOWN_LIB);
  must_reg(hub.get(), libid(4));
  err = 0;
  CHECK(hub->getutilid(libid(5), &err) == nullptr);
  CHECK(err == DSS_ERR_UNKNOWN_LIB);
}

TEST_CASE("registration: errcode pointers may be NULL", "[registration]") {
  HubHandle hub;
  void* u = hub->reg(libid(0), cancel_unreg, nullptr);
  REQUIRE(u != nullptr);
  CHECK(hub->reg(libid(0), cancel_unreg, nullptr) == u);  // already registered
  CHECK(hub->reg(libid(1), nullptr, nullptr) == nullptr);  // no cancel
  CHECK(hub->getutilid(libid(0), nullptr) == u);
  CHECK(hub->getutilid(libid(1), nullptr) == nullptr);  // unknown
  hub->close();
  CHECK(hub->reg(libid(2), cancel_unreg, nullptr) == nullptr);  // not started
  CHECK(hub->getutilid(libid(0), nullptr) == nullptr);
}

TEST_CASE("registration: two hubs with the same libid get different utilids",
          "[registration]") {
  CancelLog::get().reset();
  Rec ra, rb;
  HubHandle a, b;
  void* ua = must_reg(a.get(), libid(0));
  void* ub = must_reg(b.get(), libid(0));
  CHECK(ua != ub);
  int err = 0;
  CHECK(a->getutilid(libid(0), &err) == ua);
  CHECK(b->getutilid(libid(0), &err) == ub);

  // Each utilid delivers to its own hub.
  REQUIRE(Hub::deliver(ua, rec_decode, nullptr, &ra) == DSS_SUCCESS);
  CHECK(a->size() == 1);
  CHECK(b->size() == 0);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  CHECK(a->size() == 1);
  CHECK(b->size() == 2);
  Taken it = must_take(a.get());
  CHECK(it.data == &ra);
  a->finish(it);
  it = must_take(b.get());
  CHECK(it.data == &rb);
  b->finish(it);

  // Unregistering in one hub leaves the other alone.
  CHECK(Hub::unreg(ua) == DSS_SUCCESS);
  CHECK(a->getutilid(libid(0), &err) == nullptr);
  CHECK(err == DSS_ERR_UNKNOWN_LIB);
  CHECK(b->getutilid(libid(0), &err) == ub);
  CHECK(err == DSS_SUCCESS);
  CHECK(b->size() == 1);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &rb) == DSS_SUCCESS);
  CHECK(b->size() == 2);
  // b's two queued items are cancelled when b closes.
  b->close();
  CHECK(rb.decode_cancelled == 2);
  CHECK(ra.calls() == 0);
}

TEST_CASE("registration: unreg removes the registration; utilids are never reused",
          "[registration]") {
  HubHandle hub;
  HubHandle other;
  std::set<void*> seen;
  void* prev = nullptr;
  for (int i = 0; i < 200; ++i) {
    Hub* h = (i % 2) ? hub.get() : other.get();
    void* u = must_reg(h, libid(i % 3));
    CHECK(seen.insert(u).second);  // never handed out before
    int err = 0;
    CHECK(h->getutilid(libid(i % 3), &err) == u);
    REQUIRE(Hub::unreg(u) == DSS_SUCCESS);
    CHECK(h->getutilid(libid(i % 3), &err) == nullptr);
    CHECK(err == DSS_ERR_UNKNOWN_LIB);
    if (prev) {
      Rec r;
      CHECK(Hub::deliver(prev, rec_decode, nullptr, &r) == DSS_ERR_INVALID_UTILID);
      CHECK(Hub::unreg(prev) == DSS_ERR_INVALID_UTILID);
    }
    prev = u;
  }
  CHECK(seen.size() == 200);
  CHECK(hub->size() == 0);
  CHECK(other->size() == 0);
}

TEST_CASE("registration: reg and getutilid after close return NOT_STARTED",
          "[registration][close]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  hub->close();
  CHECK(hub->state() == Hub::State::closed);
  int err = 0;
  CHECK(hub->reg(libid(1), cancel_unreg, &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);
  err = 0;
  CHECK(hub->reg(libid(0), cancel_unreg, &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);
  err = 0;
  CHECK(hub->getutilid(libid(0), &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);
  err = 0;
  CHECK(hub->getutilid(libid(1), &err) == nullptr);
  CHECK(err == DSS_ERR_NOT_STARTED);
  int rc = Hub::deliver(u, rec_decode, nullptr, &r);
  CHECK((rc == DSS_ERR_INVALID_UTILID || rc == DSS_ERR_NOT_STARTED));
  CHECK(Hub::unreg(u) == DSS_ERR_INVALID_UTILID);
  CHECK(r.calls() == 0);
}
