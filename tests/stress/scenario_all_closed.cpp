// scenario_all_closed.cpp -- moments when every state is closed (so Lua has
// dlclosed darksidesync.so): the module must still be mapped (it pins
// itself), every producer blocked before must have been released, and
// deliveries with stale utilids, through the API struct pointers obtained
// earlier, must return DSS_ERR_INVALID_UTILID (see stress.cpp).
#include <cstring>
#include <thread>

#include "runner.h"

namespace stress {

std::atomic<bool> g_stop{false};
std::atomic<int> g_states_exited{0};
std::atomic<int> g_producers_exited{0};
std::atomic<std::uint64_t> g_window_gen{0};

namespace {

std::atomic<bool> g_want_window{false};
std::atomic<int> g_closed_waiting{0};  // state threads parked, all closed

// Waits until every state thread is parked (or gone); false (reported)
// after 10 s.
bool all_closed() {
  auto deadline = deadline_ms(10000);
  while (g_closed_waiting.load() + g_states_exited.load() + g_hosts_exited.load() <
         opt.states + opt.session_hosts) {
    if (Clock::now() > deadline) {
      fail("the states did not all close within 10 s for an all-closed moment");
      return false;
    }
    sleep_us(500);
  }
  return true;
}

// Every producer that was inside deliver must come out: nothing is open.
void producers_released() {
  std::vector<std::uint64_t> calls(std::size_t(opt.producers));
  std::vector<bool> inside(std::size_t(opt.producers));
  for (std::size_t i = 0; i < calls.size(); ++i) {
    inside[i] = g_prod[i].enter_ns.load() != 0;
    calls[i] = g_prod[i].calls.load();
  }
  auto deadline = deadline_ms(10000);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    while (inside[i] && g_prod[i].calls.load() == calls[i] && g_prod[i].enter_ns.load() != 0) {
      if (Clock::now() > deadline) {
        fail("all states closed: producer %d still inside deliver after 10 s", int(i));
        st.hung++;
        break;
      }
      sleep_us(200);
    }
  }
}

// Probe i of a stale utilid id, through every entry that takes one.
void probe_stale(const DSS_api_1v0_t* a, const DSS_api_2v0_t* a2, int i, std::uintptr_t id) {
  void* uid = reinterpret_cast<void*>(id);
  // A utilid still registered (its hub never closed) would keep a
  // blocking probe here for good, or queue one that lives on this stack.
  if (a2) {
    long q = a2->queued(uid);
    if (q != DSS_ERR_INVALID_UTILID) {
      fail("all states closed: queued(stale %#" PRIxPTR ") returned %ld: still registered",
           id, q);
      return;
    }
  }
  Payload probe = {MAGIC, PROBE, A_CALL, i % 2 == 1, uid, ANS_NONE, nullptr, nullptr};
  DSS_return_1v0_t ret = probe.blocking ? stress_ret : nullptr;
  int rc = a->deliver(uid, stress_decode, ret, &probe);
  if (rc != DSS_ERR_INVALID_UTILID)
    fail("all states closed: deliver(stale %#" PRIxPTR ") returned %d", id, rc);
  if (a2) {
    rc = a2->deliver2(uid, stress_decode, ret, &probe, i < 4 ? 0u : DSS_DELIVER_NOWAIT,
                      i % 3 == 0 ? 0 : 50);
    if (rc != DSS_ERR_INVALID_UTILID)
      fail("all states closed: deliver2(stale %#" PRIxPTR ") returned %d", id, rc);
    long q = a2->queued(uid);
    if (q != DSS_ERR_INVALID_UTILID)
      fail("all states closed: queued(stale %#" PRIxPTR ") returned %ld", id, q);
  }
  rc = a->unreg(uid);
  if (rc != DSS_ERR_INVALID_UTILID)
    fail("all states closed: unreg(stale %#" PRIxPTR ") returned %d", id, rc);
  st.window_probes++;
}

// Stale utilids, through the API pointers obtained earlier: the slots'
// last ones, then stale ones.
void probe_stale_ids(const DSS_api_1v0_t* a) {
  if (std::strcmp(a->version, DSS_API_1v0_KEY) != 0)
    fail("all states closed: the API struct's version reads '%s'", a->version);
  for (int i = 0; i < 8; ++i) {
    std::uintptr_t id = i < opt.states * NLIBS ? slot_utilid(i / NLIBS, i % NLIBS)
                                               : g_stale.pick_id();
    probe_stale(a, api2(), i, id);
  }
}

}  // namespace

void wait_window() {
  if (!g_want_window.load()) return;
  g_closed_waiting.fetch_add(1);
  while (g_want_window.load()) sleep_us(500);
  g_closed_waiting.fetch_sub(1);
}

void do_window() {
  g_want_window = true;
  if (!all_closed()) {
    g_want_window = false;
    return;
  }
  g_window_gen.fetch_add(1);  // odd: every state is closed
  st.windows++;
  const DSS_api_1v0_t* a = api();
  bool contains = false;
  if (!module_mapped(a, &contains))
    fail("all states closed: darksidesync.so is no longer mapped");
  else if (a && !contains)
    fail("all states closed: the API struct %p is outside darksidesync.so",
         static_cast<const void*>(a));
  producers_released();
  if (a) probe_stale_ids(a);
  // Let the producers deliver into the void for a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  g_window_gen.fetch_add(1);  // even: states may open again
  g_want_window = false;
}

}  // namespace stress
