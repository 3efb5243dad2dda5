// dss::Poller, both backends: one-shot and persistent interests, timeouts
// that never end early, errors for bad fds, closed and reused fd numbers,
// and more ready fds than one epoll_wait buffer holds.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <vector>

#include "poller.hpp"

using dss::Poller;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    r = fds[0];
    w = fds[1];
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
  }
  void put() const { REQUIRE(write(w, "x", 1) == 1); }
  void take() const {
    char c;
    REQUIRE(read(r, &c, 1) == 1);
  }
};

std::vector<int> ready_fds(const Poller& p) {
  std::vector<int> fds;
  for (const auto& e : p.events()) fds.push_back(e.fd);
  std::sort(fds.begin(), fds.end());
  return fds;
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("poller: backends, one-shot and persistent interests", "[poller]") {
  auto backend = GENERATE(Poller::Backend::Epoll, Poller::Backend::Poll);
  Poller p(backend);
  REQUIRE(p.error() == 0);
  CHECK(std::string(p.backend()) == (backend == Poller::Backend::Epoll ? "epoll" : "poll"));
  Pipe a, b;

  SECTION("nothing ready: wait(0) reports nothing") {
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    CHECK(p.wait(0) == 0);
    CHECK(p.events().empty());
    CHECK(p.armed() == 1);
  }
  SECTION("one-shot: reported once, then not until added again") {
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    REQUIRE(p.add(b.r, Poller::kIn, true) == 0);
    a.put();
    REQUIRE(p.wait(1) == 1);
    CHECK(p.events()[0].fd == a.r);
    CHECK(p.events()[0].events == Poller::kIn);
    CHECK(p.armed() == 1);  // b still armed
    CHECK(p.wait(0) == 0);  // a still readable, but its interest fired
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    REQUIRE(p.wait(0) == 1);
    CHECK(p.events()[0].fd == a.r);
  }
  SECTION("persistent: reported on every wait while it holds") {
    REQUIRE(p.add(a.r, Poller::kIn, false) == 0);
    a.put();
    for (int i = 0; i < 3; ++i) {
      REQUIRE(p.wait(1) == 1);
      CHECK(p.events()[0].fd == a.r);
    }
    a.take();
    CHECK(p.wait(0) == 0);
    CHECK(p.armed() == 1);
  }
  SECTION("interests add up; a writable pipe end reports kOut") {
    REQUIRE(p.add(a.w, Poller::kOut, true) == 0);
    REQUIRE(p.wait(1) == 1);
    CHECK(p.events()[0].fd == a.w);
    CHECK(p.events()[0].events == Poller::kOut);
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    REQUIRE(p.add(a.r, Poller::kRdHup, true) == 0);  // ORed in, not replacing
    a.put();
    REQUIRE(p.wait(1) == 1);
    CHECK(p.events()[0].fd == a.r);
    CHECK(p.events()[0].events == Poller::kIn);
  }
  SECTION("set replaces the interest; armed() counts what can still fire") {
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    REQUIRE(p.add(a.w, Poller::kOut, true) == 0);
    CHECK(p.armed() == 2);
    REQUIRE(p.set(a.w, Poller::kIn, true) == 0);  // a pipe's write end never reads
    CHECK(p.armed() == 2);
    CHECK(p.wait(0) == 0);
    REQUIRE(p.set(a.w, Poller::kOut, true) == 0);
    REQUIRE(p.wait(1) == 1);
    CHECK(p.events()[0].fd == a.w);
    CHECK(p.armed() == 1);
    CHECK(p.del(a.r) == 0);
    CHECK(p.armed() == 0);
    CHECK(p.del(a.w) == 0);  // fired, still known
    CHECK(p.armed() == 0);
  }
  SECTION("the writer's close: the reader gets kHup") {
    REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
    close(a.w);
    a.w = -1;
    REQUIRE(p.wait(1) == 1);
    CHECK((p.events()[0].events & Poller::kHup) != 0);
  }
  SECTION("del forgets an fd; deleting an unknown one is ENOENT") {
    REQUIRE(p.add(a.r, Poller::kIn, false) == 0);
    CHECK(p.del(a.r) == 0);
    a.put();
    CHECK(p.wait(0) == 0);
    CHECK(p.armed() == 0);
    CHECK(p.del(a.r) == ENOENT);
    CHECK(p.del(12345) == ENOENT);
  }
  SECTION("bad arguments: EINVAL, EBADF") {
    CHECK(p.add(-1, Poller::kIn, true) == EINVAL);
    CHECK(p.add(a.r, 0, true) == EINVAL);
    CHECK(p.add(a.r, Poller::kErr, true) == EINVAL);  // not an interest
    int fd = dup(a.r);
    close(fd);
    CHECK(p.add(fd, Poller::kIn, true) == EBADF);
    CHECK(p.armed() == 0);
    CHECK(p.del(fd) == ENOENT);  // a failed add leaves nothing behind
  }
  SECTION("a closed fd's number reused by a new pipe works without a del") {
    int fd = dup(a.r);
    REQUIRE(p.add(fd, Poller::kIn, true) == 0);
    a.put();
    REQUIRE(p.wait(1) == 1);
    close(fd);
    int fds[2];
    REQUIRE(pipe(fds) == 0);  // takes the lowest free numbers: fd again
    CHECK(fds[0] == fd);
    CHECK(p.add(fds[0], Poller::kIn, true) == 0);
    CHECK(p.wait(0) == 0);
    REQUIRE(write(fds[1], "y", 1) == 1);
    REQUIRE(p.wait(1) == 1);
    CHECK(p.events()[0].fd == fds[0]);
    close(fds[0]);
    close(fds[1]);
  }
  SECTION("more ready fds than one buffer: all reported, each once") {
    std::vector<Pipe> pipes(150);
    std::vector<int> want;
    for (std::size_t i = 0; i < pipes.size(); ++i) {
      REQUIRE(p.add(pipes[i].r, Poller::kIn, true) == 0);
      if (i % 3 != 0) {
        pipes[i].put();
        want.push_back(pipes[i].r);
      }
    }
    std::sort(want.begin(), want.end());
    std::vector<int> got;
    while (got.size() < want.size()) {
      int n = p.wait(1);
      REQUIRE(n > 0);
      auto fds = ready_fds(p);
      got.insert(got.end(), fds.begin(), fds.end());
    }
    std::sort(got.begin(), got.end());
    CHECK(got == want);
    CHECK(p.wait(0) == 0);
    CHECK(p.armed() == 50);
  }
}

TEST_CASE("poller: a timeout never ends early; a write from another fd wakes it",
          "[poller]") {
  auto backend = GENERATE(Poller::Backend::Epoll, Poller::Backend::Poll);
  Poller p(backend);
  Pipe a;
  REQUIRE(p.add(a.r, Poller::kIn, true) == 0);
  for (double t : {0.0005, 0.003, 0.02}) {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(p.wait(t) == 0);
    CHECK(since(t0) >= t);
  }
  a.put();
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(p.wait(-1) == 1);  // no limit, but ready: returns at once
  CHECK(since(t0) < 5.0);
}
