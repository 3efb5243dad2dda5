// scenario_unreg_decode.cpp -- unreg during decode: a state delivers 400 to
// 1600 fire-and-forget items (more than one queue block) to one of its
// registrations, producers favour it meanwhile, and the unreg thread
// unregisters it once the Lua thread has decoded a random part of them (at
// least a block still queued), while the Lua thread goes on decoding (see
// stress.cpp).
#include <condition_variable>
#include <deque>

#include "runner.h"

namespace stress {

std::atomic<std::int64_t> g_unreg_enter_ns{0};
std::atomic<bool> g_unreg_exited{false};

namespace {

const std::uint64_t QBLOCK = 340;  // entries in a queue block (docs/design.md)

// A request to the unreg thread: unregister rr (the state's lib k) once the
// Lua thread has decoded `after` of its items.
struct UnregReq {
  RegRec* rr;
  int k;
  std::uint64_t after;
};
std::mutex g_ureq_mu;
std::condition_variable g_ureq_cv;
std::deque<UnregReq> g_ureq;

// The next request, into req; false once the run is over.
bool next_request(UnregReq* req) {
  std::unique_lock<std::mutex> lock(g_ureq_mu);
  while (g_ureq.empty()) {
    if (g_stop.load() && g_states_exited.load() == opt.states) return false;
    g_ureq_cv.wait_for(lock, std::chrono::milliseconds(20));
  }
  *req = g_ureq.front();
  g_ureq.pop_front();
  return true;
}

// Unregisters req's registration once enough of its items were decoded
// (or its state closes, or 1 s passed).
void unreg_during_decode(const UnregReq& req) {
  RegRec* rr = req.rr;
  StateRec* sr = rr->owner;
  auto deadline = deadline_ms(1000);
  while (rr->decoded.load() < req.after && !sr->closing.load() && !rr->unreg_done.load() &&
         Clock::now() < deadline)
    sleep_us(10);
  long q = api2()->queued(rr->id());
  std::uint64_t d0 = rr->decoded.load();
  g_unreg_enter_ns = now_ns();
  int rc = unreg_rec(rr, BY_UNREG_THREAD);
  g_unreg_enter_ns = 0;
  std::uint64_t d1 = rr->decoded.load();
  if (rc == DSS_SUCCESS) {
    st.unregs++;
    st.decode_unregs++;
    g_stale.push(rr);
    if (d1 != d0) st.unreg_overlaps++;  // the Lua thread decoded meanwhile
    if (q > long(QBLOCK)) st.unreg_spanning++;  // the walk spans blocks
  } else if (rc != DSS_ERR_INVALID_UTILID) {
    fail("unreg during decode returned %d", rc);
  }
  rr->flood = false;
  int expected = req.k;  // unless a newer flood of the state took over
  sr->flood_k.compare_exchange_strong(expected, -1);
}

}  // namespace

void flood(lua_State* L, StateRec* sr) {
  int k = int(t_rng() % NLIBS);
  ensure_registered(L, sr, k);
  RegRec* rr = sr->reg[k].load();
  if (!rr || rr->unreg_done.load()) return;
  lua_getfield(L, LUA_REGISTRYINDEX, UNBOUND_KEY);
  if (!lua_do(L, 0, 0, "unbound")) return;
  rr->flood = true;
  sr->flood_k = k;  // producers favour it
  std::uint64_t d0 = rr->decoded.load();
  int n = 400 + int(t_rng() % 1200);
  std::uint64_t got = 0;
  for (int i = 0; i < n; ++i) {
    if (!delivered(self_deliver(sr, rr))) break;  // unregistered
    ++got;
  }
  st.floods++;
  st.flood_items += got;
  // Unregister with at least a block's worth still queued.
  std::uint64_t after = d0 + (got > QBLOCK ? t_rng() % (got - QBLOCK) : 0);
  {
    std::lock_guard<std::mutex> lock(g_ureq_mu);
    g_ureq.push_back(UnregReq{rr, k, after});
  }
  g_ureq_cv.notify_one();
}

void unreg_thread() {
  UnregReq req;
  while (next_request(&req)) unreg_during_decode(req);
  g_unreg_exited = true;
}

}  // namespace stress
