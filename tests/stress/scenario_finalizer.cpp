// scenario_finalizer.cpp -- close with a draining finalizer: before some
// states are closed (after their last poll), or now and then as they open,
// the driver makes objects whose __gc runs a plan during lua_close: drain
// the queue, answer held callbacks, or register a new client and deliver
// to it (H.reglate). Every item must still end exactly once, every
// producer be released, every cancel be called as it should (see
// stress.cpp).
#include <thread>

#include "runner.h"

namespace stress {

thread_local std::string t_plans;

namespace {

// Makes an object whose finalizer runs a random plan (see runplan in the
// driver) during lua_close.
void arm_finalizer(lua_State* L, bool early) {
  static const char letters[] = "pppdddDhrr";
  char plan[5];
  int n = 1 + int(t_rng() % 4);
  for (int i = 0; i < n; ++i) plan[i] = letters[t_rng() % (sizeof letters - 1)];
  plan[n] = 0;
  if (!t_plans.empty()) t_plans += ',';
  if (early) t_plans += "early:";
  t_plans += plan;
  lua_getfield(L, LUA_REGISTRYINDEX, ARM_KEY);
  lua_pushstring(L, plan);
  lua_do(L, 1, 0, "arm");
}

// Publishes rr as sr's registration k (and in the record producers see now,
// when a quiet moment replaced sr).
void publish_reg(StateRec* sr, int k, RegRec* rr) {
  sr->reg[k].store(rr);
  sr->utilid[k].store(rr->utilid);
  StateRec* cur = t_slot ? t_slot->rec.load() : nullptr;
  if (cur && cur != sr) {
    cur->reg[k].store(rr);
    cur->utilid[k].store(rr->utilid);
  }
}

// reg during lua_close returned id with err: whether it is a new client.
bool late_reg_ok(StateRec* sr, void* id, int err) {
  if (!id) {
    if (err != DSS_ERR_NOT_STARTED) fail("reg during lua_close: NULL, code %d", err);
    st.fin_reg_refused++;
    return false;
  }
  if (err == DSS_ERR_ALREADY_REGISTERED) {  // an earlier finalizer's
    RegRec* rr = sr->reg[LATE_K].load();
    if (!rr || rr->utilid != reinterpret_cast<std::uintptr_t>(id))
      fail("reg during lua_close: ALREADY_REGISTERED with utilid %p, not ours", id);
    return false;
  }
  if (err != DSS_SUCCESS) {
    fail("reg during lua_close: utilid %p with code %d", id, err);
    return false;
  }
  return true;
}

}  // namespace

extern "C" {

static int h_finrun(lua_State*) {
  st.fin_runs++;
  return 0;
}

// reglate(): from a finalizer during lua_close, registers a client of its
// own, publishes it to the producers and delivers a few items to it. The
// state may refuse (NOT_STARTED: already stopped).
static int h_reglate(lua_State* L) {
  StateRec* sr = t_sr;
  if (!sr || !api()) return 0;
  int err = 0;
  void* id = api()->reg(L, const_cast<char*>(&g_late_libid), stress_cancel, &err);
  if (!late_reg_ok(sr, id, err)) return 0;
  RegRec* rr = new_reg(id, sr);
  st.fin_regs++;
  publish_reg(sr, LATE_K, rr);
  int n = int(t_rng() % 8);
  for (int i = 0; i < n; ++i) {
    if (!delivered(self_deliver(sr, rr))) break;
    st.fin_items++;
  }
  return 0;
}

}  // extern "C"

void push_finalizer_helpers(lua_State* L) {
  lua_pushcfunction(L, h_finrun);
  lua_setfield(L, -2, "finrun");
  lua_pushcfunction(L, h_reglate);
  lua_setfield(L, -2, "reglate");
}

bool finalizers_at_open(lua_State* L, bool ok) {
  t_plans.clear();
  if (!ok || uniform() >= opt.fin_prob / 4) return false;
  arm_finalizer(L, true);
  return true;
}

bool finalizers_at_close(lua_State* L, bool ok) {
  if (!ok || uniform() >= opt.fin_prob) return false;
  // Items pile up for a moment before.
  std::this_thread::sleep_for(std::chrono::microseconds(t_rng() % 3000));
  for (int i = 1 + int(t_rng() % 3); i > 0; --i) arm_finalizer(L, false);
  return true;
}

}  // namespace stress
