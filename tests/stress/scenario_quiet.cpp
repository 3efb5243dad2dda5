// scenario_quiet.cpp -- a quiet moment before a state closes: the state
// unregisters its libraries (no producer can reach it any more), waits
// until no producer is inside a delivery of its items, checks stats()
// against the harness's own counts, then delivers items of its own into the
// empty bounded queue and checks queued(), queuesize(), stats().queued,
// wait(0), the wake-up fd and dispatch() against them (see stress.cpp).
#include "runner.h"

namespace stress {

namespace {

// The harness's counts of a quiet state against its stats().
void compare_stats(lua_State* L, StateRec* sr, const char* when) {
  DssStats s;
  if (!get_stats(L, &s)) return;
  std::uint64_t accepted = sr->accepted.load(), rejected = sr->rejected.load(),
                dec = sr->dec_L.load(), ret = sr->returned.load() + sr->garbage.load(),
                cq = sr->cancel_q.load(), cp = sr->cancel_p.load(),
                tq = sr->timeout_q.load(), tp = sr->timeout_p.load();
  struct {
    const char* name;
    std::uint64_t got, want;
  } rows[] = {{"delivered", s.delivered, accepted},
              {"decoded", s.decoded, dec},
              {"returned", s.returned, ret},
              {"cancelled", s.cancelled, cq + cp},
              {"timedout", s.timedout, tq + tp},
              {"rejected", s.rejected, rejected},
              {"queued", s.queued, 0},
              {"blocked", s.blocked, 0},
              {"delivered - decoded - cancelled/timedout while queued",
               s.delivered - s.decoded - cq - tq, 0}};
  for (auto& r : rows)
    if (r.got != r.want)
      fail("%s: stats().%s is %" PRIu64 ", the harness counted %" PRIu64, when,
           r.name, r.got, r.want);
  if (s.delivered && s.maxqueued == 0)
    fail("%s: stats().maxqueued is 0 after %" PRIu64 " deliveries", when, s.delivered);
  if (dcall_int(L, "queuesize") != 0) fail("%s: queuesize() is not 0", when);
}

// Makes sr's state unreachable: its libraries unregistered, producers that
// loaded its record have counted their results, and unregs made elsewhere
// (a producer, the unreg-during-decode thread) have returned, their
// cancellations counted. False (reported) if that takes 10 s.
bool quiet_down(Slot& slot, StateRec* sr) {
  for (int k = 0; k < NLIBS; ++k) {
    RegRec* rr = sr->reg[k].load();
    if (rr) unreg_counted(rr, BY_QUIET, "quiet: unreg");
  }
  slot.rec.store(tomb_of(sr));
  auto busy = [sr] {
    if (sr->inflight.load() != 0) return true;
    for (RegRec* rr : sr->regs)
      if (rr->unreg_inflight.load() != 0) return true;
    return false;
  };
  auto deadline = deadline_ms(10000);
  while (busy()) {
    if (Clock::now() > deadline) {
      fail("quiet: a producer stayed inside deliver or unreg to an unregistered library for 10 s");
      return false;
    }
    sleep_us(100);
  }
  return true;
}

// The state's own items, delivered into its empty queue by its own library.
struct OwnItems {
  StateRec* sr;
  RegRec* rr;
  long long limit;  // getmaxqueue()
  long long accepted = 0;

  // One item, delivered with flags and timeout_ms: expect is the code
  // deliver2 must return.
  void deliver(unsigned flags, long timeout_ms, int expect) {
    Payload* p = new Payload{MAGIC, SELF, A_PUSH, false, rr->id(), ANS_NONE, sr, rr};
    int rc = api2()->deliver2(rr->id(), stress_decode, nullptr, p, flags, timeout_ms);
    if (delivered(rc)) {
      sr->accepted++;
      accepted++;
      st.self_items++;
    } else {
      if (rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT) sr->rejected++;
      delete p;
    }
    bool ok = expect == DSS_SUCCESS ? delivered(rc) : rc == expect;
    if (!ok)
      fail("quiet: deliver2(flags %#x, timeout %ld) #%lld into a queue of %lld "
           "(limit %lld) returned %d, expected %d",
           flags, timeout_ms, accepted, accepted, limit, rc, expect);
  }

  // m items with NOWAIT: exactly min(m, limit) accepted; then, at the
  // limit, timeout 0 -> QUEUE_FULL and 1 ms -> TIMEOUT.
  void fill(long long m) {
    long long want = limit > 0 && limit < m ? limit : m;
    for (long long i = 0; i < m; ++i)
      deliver(DSS_DELIVER_NOWAIT, uniform() < 0.5 ? -1 : 0,
              i < want ? DSS_SUCCESS : DSS_ERR_QUEUE_FULL);
    if (limit > 0 && accepted == limit) {
      deliver(0, 0, DSS_ERR_QUEUE_FULL);  // timeout 0: never wait
      deliver(0, 1, DSS_ERR_TIMEOUT);     // nobody makes room in 1 ms
    }
  }

  // What the state says is queued, against accepted.
  void check_queued(lua_State* L, int fd) {
    long q = api2()->queued(rr->id());
    if (q != accepted) fail("quiet: queued(utilid) is %ld, %lld queued", q, accepted);
    q = api2()->queued(reinterpret_cast<void*>(sr->utilid[0].load()));
    if (q != DSS_ERR_INVALID_UTILID)
      fail("quiet: queued(unregistered utilid) returned %ld", q);
    if (dcall_int(L, "queuesize") != accepted)
      fail("quiet: queuesize() is not %lld", accepted);
    DssStats s;
    if (get_stats(L, &s) && s.queued != std::uint64_t(accepted))
      fail("quiet: stats().queued is %" PRIu64 ", %lld queued", s.queued, accepted);
    if (dcall_int(L, "wait", {0}) != accepted) fail("quiet: wait(0) is not %lld", accepted);
    if (fd_readable(fd) != (accepted > 0))
      fail("quiet: the wake-up fd is %sreadable with %lld queued",
           accepted > 0 ? "not " : "", accepted);
  }

  // dispatch() runs them all, and ends each.
  void dispatch(lua_State* L, int fd) {
    std::uint64_t d0 = t_decoded;
    long long ran = dcall_int(L, "dispatch");
    if (ran != accepted || t_decoded - d0 != std::uint64_t(accepted))
      fail("quiet: dispatch() returned %lld, %" PRIu64 " decoders ran, %lld queued", ran,
           t_decoded - d0, accepted);
    if (sr->self_ended.load() != std::uint64_t(accepted))
      fail("quiet: %" PRIu64 " of %lld own items ended", sr->self_ended.load(), accepted);
    if (fd_readable(fd)) fail("quiet: the wake-up fd is readable once dispatch() emptied the queue");
  }
};

// The state's own items into its empty queue (fd: its wake-up fd).
void own_items(lua_State* L, StateRec* sr, int fd) {
  int err = 0;
  void* self = api()->reg(L, const_cast<char*>(&g_self_libid), stress_cancel, &err);
  if (!self || err != DSS_SUCCESS) {
    fail("quiet: reg returned %p, code %d", self, err);
    return;
  }
  RegRec* selfrr = new_reg(self, sr);
  OwnItems own{sr, selfrr, dcall_int(L, "getmaxqueue")};
  own.fill(std::int64_t(t_rng() % 12));
  own.check_queued(L, fd);
  own.dispatch(L, fd);
  int rc = unreg_rec(selfrr, BY_QUIET);
  if (rc != DSS_SUCCESS) fail("quiet: unreg of the own library returned %d", rc);
  compare_stats(L, sr, "quiet, own items");
  st.stats_checks++;
}

}  // namespace

void quiet_check(lua_State* L, Slot& slot, StateRec* sr) {
  if (!quiet_down(slot, sr)) return;
  compare_stats(L, sr, "quiet");
  // The fd: the queue is empty, so it is not readable.
  int fd = int(dcall_int(L, "getfd"));
  if (fd < 0) return;
  if (fd_readable(fd)) fail("quiet: the wake-up fd is readable with an empty queue");
  if (dcall_int(L, "wait", {0}) != 0) fail("quiet: wait(0) is not 0 with an empty queue");
  own_items(L, sr, fd);
}

}  // namespace stress
