// UDP notification: one datagram " <count after queuing>" per delivered
// item to 127.0.0.1:port ("each" mode, set_port(port, false)); none with
// port 0.
#include "helpers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

using namespace ut;

TEST_CASE("udp: each fire-and-forget deliver sends \" <count>\"", "[udp]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  UdpListener l;
  CHECK(hub->port() == 0);
  REQUIRE(hub->set_port(l.port, false));
  CHECK(hub->port() == l.port);
  CHECK_FALSE(hub->coalesce());

  for (int i = 1; i <= 3; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  CHECK(l.recv(kHang) == " 2");
  CHECK(l.recv(kHang) == " 3");
  CHECK(l.recv(kQuiet) == "<none>");  // exactly one datagram per item

  // The count is the queue size after queuing, not a running total.
  hub->finish(must_take(hub.get()));
  hub->finish(must_take(hub.get()));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 2");
  for (int i = 3; i <= 12; ++i) {
    REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
    CHECK(l.recv(kHang) == " " + std::to_string(i));
  }
  CHECK(hub->size() == 12);

  // Rejected deliveries send nothing.
  CHECK(Hub::deliver(u, nullptr, nullptr, &r) == DSS_ERR_NO_DECODE_PROVIDED);
  CHECK(l.recv(kQuiet) == "<none>");
}

TEST_CASE("udp: a blocking deliver notifies too", "[udp][blocking]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  UdpListener l;
  REQUIRE(hub->set_port(l.port, false));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  Producer p(u, rec_decode, rec_ret, &r);
  CHECK(l.recv(kHang) == " 2");  // sent while the producer is blocked
  CHECK_FALSE(p.done());
  hub->finish(must_take(hub.get()));
  Taken it = must_take(hub.get());
  REQUIRE(decode(hub.get(), it) == 0);
  CHECK(hub->settle(it, 0) == 0);
  REQUIRE(p.done_within(kHang));
  CHECK(p.rc() == DSS_SUCCESS);
  CHECK(l.recv(kQuiet) == "<none>");
}

TEST_CASE("udp: port 0 disables the notification", "[udp]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  UdpListener l;
  REQUIRE(hub->set_port(l.port, false));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");

  REQUIRE(hub->set_port(0, false));
  CHECK(hub->port() == 0);
  for (int i = 0; i < 3; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(hub->size() == 4);  // queued all the same
  CHECK(l.recv(std::chrono::milliseconds(300)) == "<none>");

  // And back on: the count includes the items queued meanwhile.
  REQUIRE(hub->set_port(l.port, false));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 5");
}

TEST_CASE("udp: two hubs notify their own ports", "[udp]") {
  Rec r;
  HubHandle a, b;
  void* ua = must_reg(a.get(), libid(0));
  void* ub = must_reg(b.get(), libid(0));
  UdpListener la, lb;
  REQUIRE(a->set_port(la.port, false));
  REQUIRE(b->set_port(lb.port, false));
  REQUIRE(Hub::deliver(ua, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(ub, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(la.recv(kHang) == " 1");
  CHECK(lb.recv(kHang) == " 1");
  CHECK(lb.recv(kHang) == " 2");
  CHECK(la.recv(kQuiet) == "<none>");
  CHECK(lb.recv(kQuiet) == "<none>");
}

TEST_CASE("udp: coalesce sends one datagram when the queue goes from empty to "
          "non-empty", "[udp][coalesce]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  void* v = must_reg(hub.get(), libid(1));
  UdpListener l;
  REQUIRE(hub->set_port(l.port, true));
  CHECK(hub->port() == l.port);
  CHECK(hub->coalesce());
  for (int i = 0; i < 3; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  CHECK(l.recv(kQuiet) == "<none>");  // one for the run, not per item
  hub->finish(must_take(hub.get()));
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kQuiet) == "<none>");  // never empty meanwhile
  for (int i = 0; i < 3; ++i) hub->finish(must_take(hub.get()));
  CHECK_FALSE(hub->take());
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");  // a new run
  hub->finish(must_take(hub.get()));

  // Emptied by taking the last live item while a killed one ends the
  // consumer's reservation: the next item starts a new run, with its
  // datagram (else it would sit in the queue with no wake-up).
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(v, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  REQUIRE(Hub::unreg(v) == DSS_SUCCESS);
  hub->finish(must_take(hub.get()));
  CHECK(hub->size() == 0);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  hub->finish(must_take(hub.get()));

  // Back to one per item.
  REQUIRE(hub->set_port(l.port, false));
  CHECK_FALSE(hub->coalesce());
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(l.recv(kHang) == " 1");
  CHECK(l.recv(kHang) == " 2");
  CHECK(r.decode_cancelled == 1);  // v's item
}

// The wake hook (a session parked on the thread pool): called once per
// empty -> non-empty transition, like the fd; at once when set on a
// non-empty queue; never once removed.
TEST_CASE("wake hook: once per empty -> non-empty transition", "[hook]") {
  Rec r;
  HubHandle hub;
  void* u = must_reg(hub.get(), libid(0));
  std::atomic<int> calls{0};
  auto hook = [](void* ctx) { static_cast<std::atomic<int>*>(ctx)->fetch_add(1); };
  hub->set_wake_hook(hook, &calls);
  CHECK(calls.load() == 0);
  for (int i = 0; i < 3; ++i) REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(calls.load() == 1);
  for (int i = 0; i < 3; ++i) hub->finish(must_take(hub.get()));
  CHECK_FALSE(hub->take());  // empty: the next delivery is a transition
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(calls.load() == 2);
  hub->set_wake_hook(hook, &calls);  // set again on a non-empty queue
  CHECK(calls.load() == 3);
  hub->set_wake_hook(nullptr, nullptr);
  hub->finish(must_take(hub.get()));
  CHECK_FALSE(hub->take());
  REQUIRE(Hub::deliver(u, rec_decode, nullptr, &r) == DSS_SUCCESS);
  CHECK(calls.load() == 3);
  hub->finish(must_take(hub.get()));
}

// The hook's context is released once, when the hub is recycled: not at
// close() while a delivery still holds the hub (it may call the hook).
TEST_CASE("wake hook: its release runs once, when the hub is recycled", "[hook]") {
  Hub* hub = Hub::create();
  REQUIRE(hub);
  std::atomic<int> released{0};
  auto hook = [](void*) {};
  auto release = [](void* ctx) { static_cast<std::atomic<int>*>(ctx)->fetch_add(1); };
  hub->set_wake_hook(hook, &released, release);
  hub->ref();  // as a delivery under way holds it
  hub->close();
  hub->unref();  // the creation reference
  CHECK(released.load() == 0);
  hub->unref();  // the delivery's: recycled now
  CHECK(released.load() == 1);
}
