// client.cpp -- the client-side plumbing of the stress harness: the API
// structs found through the registry, registrations and their records, the
// states' records and slots as producers see them, stale utilids, a
// state's own deliveries, and whether darksidesync.so is mapped (see
// stress.cpp).
#include <link.h>

#include <cstring>
#include <unordered_map>

#include "runner.h"

namespace stress {

const char g_libids[NLIBS] = {0, 0};
const char g_self_libid = 0;
const char g_late_libid = 0;

// --- the API structs, found through the registry ---------------------------

namespace {

std::atomic<const DSS_api_1v0_t*> g_api{nullptr};
std::atomic<const DSS_api_2v0_t*> g_api2{nullptr};

// The struct registry["DSS.DarkSideSync"][key] (on the stack's top), if it
// is one of version key.
template <typename Api>
const Api* api_at(lua_State* L, const char* key) {
  lua_getfield(L, -1, key);
  auto a = static_cast<const Api*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (!a || std::strcmp(a->version, key) != 0) {
    fail("no valid '%s' in the registry", key);
    return nullptr;
  }
  return a;
}

// Publishes a as the run's API struct: the first one seen, never another.
template <typename Api>
void keep_api(std::atomic<const Api*>& slot, const Api* a, const char* what) {
  const Api* expected = nullptr;
  if (!slot.compare_exchange_strong(expected, a) && expected != a)
    fail("the %sAPI struct moved: %p, was %p%s", what, static_cast<const void*>(a),
         static_cast<const void*>(expected),
         *what ? "" : " (module reloaded elsewhere?)");
}

}  // namespace

const DSS_api_1v0_t* api() { return g_api.load(); }
const DSS_api_2v0_t* api2() { return g_api2.load(); }

// registry["DSS.DarkSideSync"]["DSS API 1v0"] and ["DSS API 2v0"]
bool find_api(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (!lua_istable(L, -1)) {
    fail("registry has no %s table", DSS_REGISTRY_NAME);
    lua_pop(L, 1);
    return false;
  }
  auto a = api_at<DSS_api_1v0_t>(L, DSS_API_1v0_KEY);
  auto a2 = a ? api_at<DSS_api_2v0_t>(L, DSS_API_2v0_KEY) : nullptr;
  lua_pop(L, 1);
  if (!a || !a2) return false;
  keep_api(g_api, a, "");
  keep_api(g_api2, a2, "2v0 ");
  return true;
}

// --- registrations -----------------------------------------------------------

namespace {
std::mutex g_regs_mu;
std::vector<std::unique_ptr<RegRec>> g_regs;
std::unordered_map<std::uintptr_t, RegRec*> g_reg_by_id;
}  // namespace

RegRec* new_reg(void* utilid, StateRec* owner) {
  RegRec* r = new RegRec();
  r->utilid = reinterpret_cast<std::uintptr_t>(utilid);
  r->owner = owner;
  {
    std::lock_guard<std::mutex> lock(g_regs_mu);
    g_regs.emplace_back(r);
    g_reg_by_id[r->utilid] = r;
  }
  owner->regs.push_back(r);
  return r;
}

RegRec* find_reg(void* utilid) {
  std::lock_guard<std::mutex> lock(g_regs_mu);
  auto it = g_reg_by_id.find(reinterpret_cast<std::uintptr_t>(utilid));
  return it == g_reg_by_id.end() ? nullptr : it->second;
}

int unreg_rec(RegRec* rr, int by) {
  rr->unreg_inflight++;
  int rc = api()->unreg(rr->id());
  if (rc == DSS_SUCCESS) {
    rr->unreg_by = by;
    rr->unreg_done = true;
    if (!rr->owner->closing.load()) rr->unreg_early = true;
  }
  rr->unreg_inflight--;
  return rc;
}

void unreg_counted(RegRec* rr, int by, const char* what) {
  int rc = rr ? unreg_rec(rr, by) : DSS_ERR_INVALID_UTILID;
  if (rc == DSS_SUCCESS) {
    st.unregs++;
    g_stale.push(rr);
  } else if (rc != DSS_ERR_INVALID_UTILID) {
    fail("%s returned %d", what, rc);
  }
}

void ensure_registered(lua_State* L, StateRec* sr, int k) {
  void* libid = const_cast<char*>(&g_libids[k]);
  int err = 0;
  void* id = api()->getutilid(L, libid, &err);
  if (id) {
    if (err != DSS_SUCCESS) fail("getutilid: utilid with code %d", err);
    return;
  }
  if (err != DSS_ERR_UNKNOWN_LIB) {
    fail("getutilid returned code %d", err);
    return;
  }
  id = api()->reg(L, libid, stress_cancel, &err);
  if (!id || err != DSS_SUCCESS) {
    fail("reg returned %p, code %d", id, err);
    return;
  }
  RegRec* rr = new_reg(id, sr);
  int err2 = 0;
  void* again = api()->reg(L, libid, stress_cancel, &err2);
  if (again != id || err2 != DSS_ERR_ALREADY_REGISTERED)
    fail("reg again returned %p code %d, expected %p ALREADY_REGISTERED", again,
         err2, id);
  sr->reg[k].store(rr);
  sr->utilid[k].store(reinterpret_cast<std::uintptr_t>(id));
}

// --- a state's own items -------------------------------------------------------

int ff_action() {
  double r = uniform();
  return r < 0.1 ? A_DEC0 : r < 0.13 ? A_RAISE : r < 0.15 ? A_DECRAISE : A_PUSH;
}

bool delivered(int rc) { return rc == DSS_SUCCESS || rc == DSS_ERR_UDP_SEND_FAILED; }

int self_deliver(StateRec* sr, RegRec* rr) {
  std::uint64_t idx = g_next_item.fetch_add(1);
  if (idx >= opt.items) return 1;
  int action = ff_action();
  Payload* p = new Payload{MAGIC, std::uint32_t(idx), action, false, rr->id(), ANS_NONE, sr, rr};
  st.ff++;
  st.v2++;
  g_items[idx].fetch_or(F_STARTED);
  int rc = api2()->deliver2(rr->id(), stress_decode, nullptr, p, DSS_DELIVER_NOWAIT,
                            DSS_TIMEOUT_INFINITE);
  if (delivered(rc)) {
    st.accepted++;
    sr->accepted++;
    g_items[idx].fetch_or(F_ACCEPTED);
    return rc;
  }
  refuse_item(idx, rc);
  if (rc == DSS_ERR_QUEUE_FULL) {
    st.queue_full++;
    sr->rejected++;
  } else if (rc != DSS_ERR_NOT_STARTED && rc != DSS_ERR_INVALID_UTILID) {
    fail("item %" PRIu64 ": the state's own deliver2 returned %d", idx, rc);
  }
  delete p;
  return rc;
}

// --- the states' records, as producers see them -----------------------------------

namespace {
std::mutex g_recs_mu;
std::vector<std::unique_ptr<StateRec>> g_recs;
}  // namespace

StateRec* new_rec() {
  std::lock_guard<std::mutex> lock(g_recs_mu);
  g_recs.emplace_back(new StateRec());
  return g_recs.back().get();
}

StateRec* tomb_of(StateRec* sr) {
  StateRec* tomb = new_rec();
  for (int k = 0; k < NREGS; ++k) {
    tomb->reg[k].store(sr->reg[k].load());
    tomb->utilid[k].store(sr->utilid[k].load());
  }
  return tomb;
}

std::unique_ptr<Slot[]> g_slots;

std::uintptr_t slot_utilid(int s, int k) {
  StateRec* r = g_slots[std::size_t(s)].rec.load();
  return r ? r->utilid[k].load() : 0;
}

RegRec* slot_reg(int s, int k) {
  StateRec* r = g_slots[std::size_t(s)].rec.load();
  return r ? r->reg[k].load() : nullptr;
}

// --- stale utilids ------------------------------------------------------------

StaleList g_stale;

void StaleList::push(RegRec* rr) {
  if (!rr) return;
  std::lock_guard<std::mutex> lock(mu);
  regs[n++ % 256] = rr;
}

RegRec* StaleList::pick() {
  std::lock_guard<std::mutex> lock(mu);
  if (n == 0) return nullptr;
  return regs[t_rng() % (n < 256 ? n : 256)];
}

std::uintptr_t StaleList::pick_id() {
  RegRec* rr = pick();
  return rr ? rr->utilid : 0;
}

// --- is darksidesync.so mapped? ------------------------------------------------

namespace {

struct MapQuery {
  const void* addr;
  bool found;
  bool contains;
};

int phdr_cb(dl_phdr_info* info, std::size_t, void* data) {
  MapQuery* q = static_cast<MapQuery*>(data);
  const char* name = info->dlpi_name;
  if (!name || !*name) return 0;
  const char* base = std::strrchr(name, '/');
  base = base ? base + 1 : name;
  if (std::strcmp(base, "darksidesync.so") != 0) return 0;
  q->found = true;
  auto a = reinterpret_cast<std::uintptr_t>(q->addr);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (a >= lo && a < lo + ph.p_memsz) q->contains = true;
  }
  return 0;
}

}  // namespace

bool module_mapped(const void* addr, bool* contains) {
  MapQuery q = {addr, false, false};
  dl_iterate_phdr(phdr_cb, &q);
  if (contains) *contains = q.contains;
  return q.found;
}

}  // namespace stress
