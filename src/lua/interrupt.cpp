// interrupt.cpp -- Ctrl-C during wait(). The stock `lua` interpreter
// catches SIGINT with a handler that sets a hook, so that the next Lua
// instruction raises "interrupted!"; a thread asleep in C never gets
// there. While a wait() runs and SIGINT has such a handler, ours stands in
// front of it: it writes a byte to a pipe that the wait sleeps on (poll(2),
// so it wakes whichever thread the signal landed on), then calls the
// handler it displaced. wait() returns, and the hook fires. With SIGINT at
// its default (the process dies) or ignored, nothing is installed.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "interrupt.hpp"

namespace {

std::mutex g_mu;          // guards the fields below (never the handler)
int g_users = 0;          // waits in progress with ours installed
struct sigaction g_prev;  // the handler ours displaced; read by ours
std::atomic<bool> g_prev_set{false};
int g_pipe[2] = {-1, -1};
std::atomic<unsigned> g_count{0};

void on_signal(int sig, siginfo_t* info, void* uc) {
  int saved = errno;
  g_count.fetch_add(1, std::memory_order_relaxed);
  if (g_pipe[1] >= 0) {
    char c = 1;
    ssize_t n = write(g_pipe[1], &c, 1);  // full pipe: already readable
    (void)n;
  }
  if (g_prev_set.load(std::memory_order_acquire)) {
    if (g_prev.sa_flags & SA_SIGINFO) {
      if (g_prev.sa_sigaction) g_prev.sa_sigaction(sig, info, uc);
    } else if (g_prev.sa_handler != SIG_DFL && g_prev.sa_handler != SIG_IGN) {
      g_prev.sa_handler(sig);
    }
  }
  errno = saved;
}

bool ours(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_signal;
}

bool make_pipe() {
  if (g_pipe[0] >= 0) return true;
  int p[2];
  if (pipe(p) != 0) return false;
  for (int f : p) {
    fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK);
    fcntl(f, F_SETFD, FD_CLOEXEC);
  }
  g_pipe[0] = p[0];
  g_pipe[1] = p[1];
  return true;
}

}  // namespace

namespace dss_interrupt {

int begin(unsigned* count) {
  std::lock_guard<std::mutex> lock(g_mu);
  *count = g_count.load(std::memory_order_relaxed);
  struct sigaction cur;
  if (sigaction(SIGINT, nullptr, &cur) != 0) return -1;
  if (ours(cur)) {
    ++g_users;
    return g_pipe[0];
  }
  bool handled = (cur.sa_flags & SA_SIGINFO)
                     ? cur.sa_sigaction != nullptr
                     : (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN);
  if (!handled || !make_pipe()) return -1;
  // Drain what an earlier signal left.
  char buf[64];
  while (read(g_pipe[0], buf, sizeof buf) > 0) {
  }
  *count = g_count.load(std::memory_order_relaxed);
  g_prev_set.store(false, std::memory_order_release);
  g_prev = cur;
  g_prev_set.store(true, std::memory_order_release);
  struct sigaction sa = {};
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | (cur.sa_flags & SA_RESTART);
  sa.sa_mask = cur.sa_mask;
  if (sigaction(SIGINT, &sa, nullptr) != 0) return -1;
  ++g_users;
  return g_pipe[0];
}

bool end(unsigned count) {
  std::lock_guard<std::mutex> lock(g_mu);
  bool hit = g_count.load(std::memory_order_relaxed) != count;
  if (g_users > 0 && --g_users == 0) {
    // Put the displaced handler back, unless someone replaced ours
    // meanwhile (lua.c's handler resets SIGINT to the default: a second
    // Ctrl-C then kills, as it should).
    struct sigaction cur;
    if (sigaction(SIGINT, nullptr, &cur) == 0 && ours(cur))
      sigaction(SIGINT, &g_prev, nullptr);
  }
  if (hit) {
    char buf[64];
    while (g_pipe[0] >= 0 && read(g_pipe[0], buf, sizeof buf) > 0) {
    }
  }
  return hit;
}

}  // namespace dss_interrupt
