// callbacks.cpp -- the stress client's decoder, return callback and cancel,
// as darksidesync calls them: each checks its item and records how it
// ended in the item's flags and the state's counts (see stress.cpp).
#include <thread>

#include "runner.h"

namespace stress {

thread_local const Payload* t_delivering = nullptr;
thread_local std::uint64_t t_decoded = 0, t_decraised = 0;
thread_local bool t_in_close = false;

namespace {

const char* const UNREG_BY[] = {"?", "a producer", "the Lua thread", "a quiet moment",
                                "its cancel", "the unreg-during-decode thread"};

// Records that p's item ended; doubles are counted at the end from the flags.
void end_item(Payload* p, int answer) {
  p->answer = answer;
  if (p->idx == PROBE) {
    fail("a callback ran for a refused probe");
    return;
  }
  if (p->idx == SELF) {
    if (p->sr) p->sr->self_ended++;
    return;
  }
  std::uint8_t old = g_items[p->idx].fetch_add(1);
  if (old & F_REFUSED) fail("item %u: callback after deliver refused it", p->idx);
}

bool check_payload(Payload* p, void* utilid, const char* who) {
  if (!p || p->magic != MAGIC) {
    fail("%s: bad pData %p", who, static_cast<void*>(p));
    return false;
  }
  if (utilid != p->utilid) {
    fail("%s: item %u: utilid %p, delivered with %p", who, p->idx, utilid,
         p->utilid);
  }
  return true;
}

void push_callback(lua_State* L, Payload* p) {
  lua_getfield(L, LUA_REGISTRYINDEX, CB_KEY);
  lua_pushinteger(L, lua_Integer(p->idx));
  lua_pushinteger(L, lua_Integer(p->action));
}

// A decoder or return callback runs with L != NULL: its registration must
// not have ended (an unreg of it returned, or its lua_close returned).
void check_late(const Payload* p, const char* who) {
  RegRec* rr = p->rr;
  if (!rr) return;
  bool unregd = rr->unreg_done.load(), closed = rr->closed.load();
  if (!unregd && !closed) return;
  st.late++;
  if (unregd)
    fail("item %u: %s ran with L != NULL after unreg(%#" PRIxPTR ") by %s returned", p->idx,
         who, rr->utilid, UNREG_BY[rr->unreg_by.load()]);
  else
    fail("item %u: %s ran with L != NULL after lua_close of its state (utilid %#" PRIxPTR
         ") returned", p->idx, who, rr->utilid);
}

// p's item ended without Lua: it timed out on its producer's thread (which
// is delivering it), or was cancelled; while queued (the decoder), or
// while Lua held its waiting-thread callback (the return callback).
// Returns whether it timed out.
bool ended_without_L(Payload* p, bool queued) {
  StateRec* sr = p->sr;
  if (p == t_delivering) {
    (queued ? st.timedout_queued : st.timedout_pending)++;
    if (sr) (queued ? sr->timeout_q : sr->timeout_p)++;
    end_item(p, ANS_TIMEDOUT);
    return true;
  }
  st.cancels++;
  if (sr) (queued ? sr->cancel_q : sr->cancel_p)++;
  end_item(p, ANS_CANCELLED);
  return false;
}

// A blocking delivery from a decoder (the Lua thread, inside poll or
// dispatch) would wait for this very thread: refused at once.
void deadlock_probe(const Payload* p) {
  Payload probe = {MAGIC, PROBE, A_CALL, true, p->utilid, ANS_NONE, nullptr, nullptr};
  int rc = uniform() < 0.5
               ? api2()->deliver2(p->utilid, stress_decode, stress_ret, &probe, 0,
                                  uniform() < 0.5 ? DSS_TIMEOUT_INFINITE : 1000)
               : api()->deliver(p->utilid, stress_decode, stress_ret, &probe);
  // INVALID_UTILID: a producer unregistered the library meanwhile;
  // NOT_STARTED: draining from a finalizer, the state closing.
  if (rc != DSS_ERR_WOULD_DEADLOCK && rc != DSS_ERR_INVALID_UTILID &&
      !(t_in_close && rc == DSS_ERR_NOT_STARTED))
    fail("a blocking deliver from a decoder returned %d, not WOULD_DEADLOCK", rc);
  st.deadlock_probes++;
}

// The decoder with L: counts the decode, and probes now and then.
void decode_start(Payload* p) {
  t_decoded++;
  if (p->sr) p->sr->dec_L++;
  if (RegRec* rr = p->rr) {
    check_late(p, "decoder");
    rr->decoded.fetch_add(1, std::memory_order_relaxed);
    // unreg during decode: give the unregistering thread a chance to run
    if (rr->flood.load(std::memory_order_relaxed) && (t_rng() & 31) == 0)
      std::this_thread::yield();
  }
  if (!p->blocking && p->idx != SELF && uniform() < 0.003) deadlock_probe(p);
}

}  // namespace

extern "C" {

int stress_decode(lua_State* L, void* pData, void* utilid) {
  Payload* p = static_cast<Payload*>(pData);
  if (!check_payload(p, utilid, "decoder")) return 0;
  if (!L) {
    if (p == t_delivering && !p->blocking)
      fail("item %u: fire-and-forget item ended by a timeout", p->idx);
    if (!ended_without_L(p, true) && !p->blocking) delete p;
    return 0;
  }
  decode_start(p);
  if (p->action == A_DEC0 || p->action == A_DECRAISE) {
    st.dec0++;
    end_item(p, ANS_DEC0);
    bool raise = p->action == A_DECRAISE;
    if (!p->blocking) delete p;
    if (raise) {
      t_decraised++;
      st.raised++;
      luaL_error(L, "stress decoder raise");
    }
    return 0;
  }
  if (!lua_checkstack(L, 3)) {
    fail("decoder: lua_checkstack failed");
    return 0;
  }
  if (!p->blocking) {
    st.decoded++;
    end_item(p, ANS_RETURNED);
    push_callback(L, p);
    delete p;
    return 3;
  }
  if (p->idx < PROBE - 1) {
    std::uint8_t old = g_items[p->idx].fetch_add(F_DEC_ONE);
    if (old & (F_DECODES | F_ENDS))
      fail("item %u: decoded again, or after it ended (flags %#x)", p->idx,
           unsigned(old));
  }
  push_callback(L, p);
  return 3;
}

int stress_ret(lua_State* L, void* pData, void* utilid, int garbage) {
  Payload* p = static_cast<Payload*>(pData);
  if (!check_payload(p, utilid, "return callback")) return 0;
  StateRec* sr = p->sr;
  if (!p->blocking) {
    fail("item %u: return callback of a fire-and-forget item", p->idx);
    return 0;
  }
  if (p->idx < PROBE - 1 && !(g_items[p->idx].load() & F_DECODES))
    fail("item %u: return callback before it was decoded", p->idx);
  if (!L) {
    if (garbage) fail("item %u: return callback with L == NULL and garbage", p->idx);
    ended_without_L(p, false);
    return 0;
  }
  check_late(p, garbage ? "return callback (collected)" : "return callback");
  if (garbage) {
    if (p->action != A_DROP && p->action != A_HOLD)
      fail("item %u: collected, but its action was %d", p->idx, p->action);
    st.garbage++;
    if (sr) sr->garbage++;
    end_item(p, ANS_GARBAGE);
    return 0;
  }
  if (lua_gettop(L) < 1 || !lua_isnumber(L, 1) ||
      lua_tointeger(L, 1) != lua_Integer(p->idx))
    fail("item %u: return callback got the wrong Lua arguments", p->idx);
  st.returned++;
  if (sr) sr->returned++;
  end_item(p, ANS_RETURNED);
  if (!lua_checkstack(L, 1)) return 0;
  lua_pushinteger(L, lua_Integer(p->idx) * 2);
  return 1;
}

void stress_cancel(void* utilid) {
  st.client_cancels++;
  if (!utilid) fail("cancel callback with a NULL utilid");
  RegRec* rr = find_reg(utilid);
  if (!rr)
    fail("cancel callback for utilid %p, never registered", utilid);
  else if (rr->cancels.fetch_add(1) != 0)
    fail("cancel callback for utilid %p called again", utilid);
  if (uniform() < 0.5) {
    int rc = rr ? unreg_rec(rr, BY_CANCEL) : api()->unreg(utilid);
    // INVALID_UTILID: a producer unregistered it concurrently.
    if (rc != DSS_SUCCESS && rc != DSS_ERR_INVALID_UTILID)
      fail("unreg from cancel returned %d", rc);
  }
}

}  // extern "C"

}  // namespace stress
