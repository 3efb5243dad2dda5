// scenario_states.cpp -- a state thread: opens a Lua state, registers two
// client libraries, drains the queue with the driver (its mode switched at
// random), unregisters and re-registers mid-flight, now and then floods a
// registration (scenario_unreg_decode.cpp), has a quiet moment
// (scenario_quiet.cpp) or arms draining finalizers
// (scenario_finalizer.cpp), closes the state while producers are blocked
// and checks what lua_close left; then opens a new one (see stress.cpp).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "runner.h"

namespace stress {

std::unique_ptr<std::atomic<std::int64_t>[]> g_close_ns;

namespace {

// A UDP socket for setport in t_udp, bound to a free port on localhost;
// returns the port, or -1.
int open_udp() {
  t_udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t salen = sizeof sa;
  if (t_udp < 0 || ::bind(t_udp, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::getsockname(t_udp, reinterpret_cast<sockaddr*>(&sa), &salen) != 0)
    return -1;
  return ntohs(sa.sin_port);
}

// One step of the driver; false if it raised.
bool step(lua_State* L, int steps, lua_Integer* ran) {
  lua_getfield(L, LUA_REGISTRYINDEX, STEP_KEY);
  lua_pushnumber(L, 0.05);
  lua_pushboolean(L, steps % 16 == 0);
  if (!lua_do(L, 2, 2, "step")) return false;
  *ran = lua_tointeger(L, -2);
  update_max(st.max_queue, std::uint64_t(lua_tointeger(L, -1)));
  lua_pop(L, 2);
  return true;
}

// Unregisters a client mid-flight, now and then, from the Lua thread, and
// re-registers what was unregistered (here or by a producer).
void churn(lua_State* L, StateRec* sr, bool first) {
  if (uniform() < 0.004) unreg_counted(sr->reg[t_rng() % NLIBS].load(), BY_LUA_THREAD, "unreg");
  if (uniform() < 0.3 || first) {
    for (int k = 0; k < NLIBS; ++k) {
      std::uintptr_t before = sr->utilid[k].load();
      ensure_registered(L, sr, k);
      if (!first && sr->utilid[k].load() != before) st.reregs++;
    }
  }
}

// Runs the driver's steps for 1..max_open_ms (ok: its mode is set); returns
// false once setting a new mode failed.
bool drive(lua_State* L, StateRec* sr, int port, bool ok) {
  int flood_step = uniform() < opt.flood_prob ? 1 + int(t_rng() % 16) : -1;
  auto until = Clock::now() +
               std::chrono::milliseconds(1 + std::int64_t(t_rng() % std::uint64_t(opt.max_open_ms)));
  int steps = 0;
  while (ok && !g_stop.load() && Clock::now() < until) {
    if (steps == flood_step) flood(L, sr);
    lua_Integer ran;
    if (!step(L, ++steps, &ran)) break;
    churn(L, sr, steps == 1);
    if (uniform() < 0.02) ok = set_mode(L, pick_mode(), port);
    if (ran == 0) sleep_us(100);
  }
  return ok;
}

// After lua_close(L) of sr's state returned: its registrations are gone,
// and each client's cancel ran as it should have.
void check_cancels(int s, StateRec* sr, Clock::time_point deadline) {
  int live = 0, uncancelled = 0, early = 0;
  std::uintptr_t first = 0;
  for (RegRec* rr : sr->regs) {
    long q = api2()->queued(rr->id());
    if (q != DSS_ERR_INVALID_UTILID && !live++) first = rr->utilid;
    while (rr->unreg_inflight.load() != 0 && Clock::now() < deadline) sleep_us(100);
    int c = rr->cancels.load();
    if (c == 0 && !rr->unreg_done.load()) ++uncancelled;
    if (c != 0 && rr->unreg_early.load()) ++early;
    st.cancel_checks++;
  }
  const char* plans = t_plans.empty() ? "none" : t_plans.c_str();
  if (live)
    fail("state %d: %d of its %zu utilids (first %#" PRIxPTR ") still registered after "
         "lua_close returned (finalizer plans: %s)", s, live, sr->regs.size(), first, plans);
  if (uncancelled)
    fail("state %d: %d registration(s) live at lua_close whose cancel was never called "
         "(finalizer plans: %s)", s, uncancelled, plans);
  if (early)
    fail("state %d: cancel called for %d registration(s) unregistered before lua_close", s,
         early);
}

// After lua_close(L) of sr's state returned: see check_cancels; and every
// producer that delivered to it (live or stale utilids) comes out of
// deliver.
void after_close(int s, Slot& slot, StateRec* sr) {
  for (RegRec* rr : sr->regs) rr->closed = true;
  StateRec* cur = slot.rec.load();  // sr, or the record of its quiet moment
  slot.rec.store(tomb_of(cur));
  double limit_s = std::min(10.0, opt.hang_seconds) * opt.scale;
  auto deadline =
      Clock::now() + std::chrono::milliseconds(std::int64_t(limit_s * 1000));
  check_cancels(s, sr, deadline);
  auto inside = [&] {
    int n = sr->inflight.load() + (cur != sr ? cur->inflight.load() : 0);
    for (RegRec* rr : sr->regs) n += rr->stale_inflight.load();
    return n;
  };
  while (int n = inside()) {
    if (Clock::now() > deadline) {
      fail("state %d: %d producer(s) still inside deliver to it %.0f s after lua_close "
           "returned (finalizer plans: %s)", s, n, limit_s,
           t_plans.empty() ? "none" : t_plans.c_str());
      st.hung++;
      return;
    }
    sleep_us(100);
  }
}

// Closes L (sr's state, published in slot s) and checks what it left.
void close_state(int s, Slot& slot, StateRec* sr, lua_State* L) {
  sr->closing = true;
  t_in_close = true;
  g_close_ns[std::size_t(s)] = now_ns();
  std::uint64_t d0 = t_decoded;
  lua_close(L);
  g_close_ns[std::size_t(s)] = 0;
  t_in_close = false;
  st.fin_decoded += t_decoded - d0;
  st.states_closed++;
  after_close(s, slot, sr);
  t_sr = nullptr;
  for (int k = 0; k < NREGS; ++k) g_stale.push(sr->reg[k].load());
}

// The life of one state, L, opened by state thread s.
void run_state(int s, Slot& slot, lua_State* L, int port) {
  st.states_opened++;
  StateRec* sr = new_rec();
  t_sr = sr;
  t_slot = &slot;
  for (int k = 0; k < NLIBS; ++k) ensure_registered(L, sr, k);
  slot.rec.store(sr);
  bool ok = set_mode(L, pick_mode(), port);
  bool fin = finalizers_at_open(L, ok);
  ok = drive(L, sr, port, ok);
  // Half the time a quiet moment first; else close while producers are
  // blocked and deliveries race the close. The slot keeps publishing the
  // utilids: they are stale from now on.
  if (ok && t_rng() % 2 == 0) quiet_check(L, slot, sr);
  collect_report(L);
  if (finalizers_at_close(L, ok)) fin = true;
  if (fin) st.fin_states++;
  close_state(s, slot, sr, L);
}

}  // namespace

void state_thread(int s) {
  t_rng.seed(opt.seed * 1000003u + 17u + std::uint64_t(s));
  Slot& slot = g_slots[std::size_t(s)];
  int port = open_udp();
  if (port < 0) {
    fail("state %d: no UDP socket: %s", s, std::strerror(errno));
    g_stop = true;
    g_states_exited.fetch_add(1);
    return;
  }
  while (!g_stop.load()) {
    wait_window();
    if (g_stop.load()) break;
    lua_State* L = open_state(t_rng());
    if (!L) {
      g_stop = true;
      break;
    }
    run_state(s, slot, L, port);
    if (t_rng() % 4 == 0) sleep_us(std::int64_t(t_rng() % 3000));
  }
  ::close(t_udp);
  g_states_exited.fetch_add(1);
}

}  // namespace stress
