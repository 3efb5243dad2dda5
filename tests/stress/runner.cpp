// runner.cpp -- the stress harness's options, failures, clocks and random
// numbers (see stress.cpp).
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "runner.h"

#ifndef DSS_STRESS_MODULE_DIR
#define DSS_STRESS_MODULE_DIR "."
#endif

namespace stress {

Options opt;

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: stress [--seed N] [--items N] [--seconds S] [--producers P]\n"
               "              [--states S] [--hang-seconds S] [--window-every S]\n"
               "              [--max-open-ms MS] [--module-dir DIR]\n"
               "              [--finalizer-prob P] [--flood-prob P]\n"
               "              [--session-hosts N] [--session-traffic S]\n"
               "              [--session-round-seed N]\n"
               "  --finalizer-prob P  share of closes with draining finalizers (0.2)\n"
               "  --flood-prob P      share of states with an unreg during decode (0.1)\n"
               "  --session-hosts N   threads running sessions rounds (1; 0: none)\n"
               "  --session-traffic S a round's traffic time (default 0.1 to 0.6 s)\n"
               "  --session-round-seed N  one sessions round, with that seed\n"
               "  --states 0 --producers 0: the sessions scenario alone\n");
  std::exit(2);
}

// Sets the option a (with its value v); false if there is no such option.
bool set_option(const std::string& a, const char* v) {
  if (a == "--seed") {
    opt.seed = std::strtoull(v, nullptr, 10);
    opt.seed_given = true;
  } else if (a == "--items") {
    opt.items = std::strtoull(v, nullptr, 10);
  } else if (a == "--seconds") {
    opt.seconds = std::atof(v);
  } else if (a == "--producers") {
    opt.producers = std::atoi(v);
  } else if (a == "--states") {
    opt.states = std::atoi(v);
  } else if (a == "--hang-seconds") {
    opt.hang_seconds = std::atof(v);
  } else if (a == "--window-every") {
    opt.window_every = std::atof(v);
  } else if (a == "--max-open-ms") {
    opt.max_open_ms = std::atoi(v);
  } else if (a == "--module-dir") {
    opt.module_dir = v;
  } else if (a == "--finalizer-prob") {
    opt.fin_prob = std::atof(v);
  } else if (a == "--flood-prob") {
    opt.flood_prob = std::atof(v);
  } else if (a == "--session-hosts") {
    opt.session_hosts = std::atoi(v);
  } else if (a == "--session-traffic") {
    opt.session_traffic = std::atof(v);
  } else if (a == "--session-round-seed") {
    opt.session_round_seed = std::strtoull(v, nullptr, 10);
  } else {
    return false;
  }
  return true;
}

}  // namespace

void parse(int argc, char** argv) {
  opt.module_dir = DSS_STRESS_MODULE_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage();
    if (!set_option(a, argv[++i])) usage();
  }
  // No states and no producers: the sessions scenario alone.
  bool sessions_only = opt.states == 0 && opt.producers == 0 && opt.session_hosts > 0;
  if ((!sessions_only && (opt.producers < 1 || opt.states < 1)) || opt.session_hosts < 0 ||
      (opt.session_round_seed && opt.session_hosts != 1) || opt.max_open_ms < 1 ||
      opt.items > 0xfffffff0u || !(opt.fin_prob >= 0 && opt.fin_prob <= 1) ||
      !(opt.flood_prob >= 0 && opt.flood_prob <= 1))
    usage();
  if (!opt.seed_given) {
    std::random_device rd;
    opt.seed = (std::uint64_t(rd()) << 32 | rd()) % 1000000000u;
  }
  if (const char* sc = std::getenv("DSS_TEST_TIMESCALE")) {
    double v = std::atof(sc);
    if (v >= 1) opt.scale = v;
  }
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

Clock::time_point deadline_ms(double ms) {
  return Clock::now() + std::chrono::milliseconds(std::int64_t(ms * opt.scale));
}

void sleep_us(std::int64_t us) {
  std::this_thread::sleep_for(std::chrono::microseconds(us));
}

// --- failures ------------------------------------------------------------------

std::atomic<int> g_errors{0};
static std::mutex g_print_mu;

void fail(const char* fmt, ...) {
  int n = g_errors.fetch_add(1);
  if (n >= 30) return;  // enough to go on
  std::lock_guard<std::mutex> lock(g_print_mu);
  std::fprintf(stderr, "stress: FAIL: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

// --- random numbers ---------------------------------------------------------------

thread_local std::mt19937_64 t_rng;

double uniform() {
  return double(t_rng() >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace stress
