// fillprof.cpp -- issue 18, T3/T4: one producer fills the queue (deliver,
// no consumer) vs a bare mutex+deque<long> push (dss_bench's CeilQ) and a
// mutex+deque of a 24-byte entry; per item: ns, minor page faults.
// Usage: fillprof N REPS [all|ours|bare|bare24]. Not built by CMake:
//   g++ -std=c++17 -O3 -DNDEBUG -g -Iinclude -Isrc/core bench/prof/fillprof.cpp \
//       build-r/libdss_core.a -lpthread -o fillprof
// GLIBC_TUNABLES=glibc.malloc.trim_threshold=4000000000 keeps freed pages
// mapped between repetitions: the same comparison without page faults.
#include "../../src/core/hub.hpp"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace dss;
using Clock = std::chrono::steady_clock;

static int dec(lua_State*, void*, void*) { return 0; }
static void cancel(void* u) { Hub::unreg(u); }

struct E24 { long a; void* b; void* c; };

template <typename T>
struct Bare {
  std::mutex mu;
  std::deque<T> q;
  int efd = eventfd(0, EFD_CLOEXEC);
  ~Bare() { close(efd); }
  void push(T x) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> l(mu);
      was_empty = q.empty();
      q.push_back(x);
    }
    if (was_empty) { std::uint64_t one = 1; if (write(efd, &one, 8) != 8) std::abort(); }
  }
};

struct Fig { double ns; double faults; };

static long minflt_thread() {
  rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_minflt;
}

template <typename F>
static Fig timed_thread(long n, F f) {
  Fig r{};
  std::thread t([&] {
    long f0 = minflt_thread();
    auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) f(i);
    r.ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / double(n);
    r.faults = double(minflt_thread() - f0) / double(n);
  });
  t.join();
  return r;
}

static Fig bare(long n) {
  Bare<long> q;
  return timed_thread(n, [&](long i) { q.push(i); });
}
static Fig bare24(long n) {
  Bare<E24> q;
  return timed_thread(n, [&](long i) { q.push(E24{i, nullptr, nullptr}); });
}
static Fig ours(long n) {
  Hub* h = Hub::create();
  int err;
  static char lib;
  void* u = h->reg(&lib, cancel, &err);
  if (!u) std::abort();
  Fig r = timed_thread(n, [&](long i) {
    if (Hub::deliver(u, dec, nullptr, reinterpret_cast<void*>(i)) != DSS_SUCCESS) std::abort();
  });
  h->close();
  h->unref();
  return r;
}

int main(int argc, char** argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  int reps = argc > 2 ? std::atoi(argv[2]) : 7;
  std::string which = argc > 3 ? argv[3] : "all";
  std::vector<double> b, b24, o, fb, fb24, fo;
  for (int r = 0; r < reps; ++r) {
    if (which == "all" || which == "bare") { Fig f = bare(n); b.push_back(f.ns); fb.push_back(f.faults); }
    if (which == "all" || which == "bare24") { Fig f = bare24(n); b24.push_back(f.ns); fb24.push_back(f.faults); }
    if (which == "all" || which == "ours") { Fig f = ours(n); o.push_back(f.ns); fo.push_back(f.faults); }
  }
  auto med = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("n=%ld reps=%d  ns/item (median) and minor faults/item\n", n, reps);
  if (!b.empty()) std::printf("bare deque<long>  %6.2f ns  %.5f flt\n", med(b), med(fb));
  if (!b24.empty()) std::printf("bare deque<E24>   %6.2f ns  %.5f flt\n", med(b24), med(fb24));
  if (!o.empty()) std::printf("ours deliver      %6.2f ns  %.5f flt\n", med(o), med(fo));
  if (!b.empty() && !o.empty()) std::printf("ratio ours/bare rate %.2fx\n", med(b) / med(o));
  if (!b24.empty() && !o.empty()) std::printf("ratio ours/bare24 rate %.2fx\n", med(b24) / med(o));
}
