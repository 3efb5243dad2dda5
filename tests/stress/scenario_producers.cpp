// scenario_producers.cpp -- a producer thread: delivers items (fire and
// forget or blocking, a random decoder and Lua-side action) to whatever
// utilid a state publishes, racing the closes, plus stale utilids; through
// the 1v0 deliver or the 2v0 deliver2 (NOWAIT or not, invalid flag bits now
// and then, timeouts from 0 to 200 ms or none), and checks what it returns
// against how the item ended (see stress.cpp).
#include <thread>

#include "runner.h"

namespace stress {

std::unique_ptr<ProducerInfo[]> g_prod;

namespace {

const long TIMEOUTS[] = {DSS_TIMEOUT_INFINITE, DSS_TIMEOUT_INFINITE, DSS_TIMEOUT_INFINITE,
                         0, 1, 1, 2, 5, 5, 20, 200, -7};

// One delivery of item idx, as the producer makes it.
struct Delivery {
  std::uint64_t idx;
  bool stale = false;
  std::uintptr_t id = 0;
  StateRec* sr = nullptr;      // counts us in its inflight
  RegRec* rr = nullptr;
  RegRec* stale_rr = nullptr;  // counts us in its stale_inflight
  bool blocking = false;
  int action = A_PUSH;
  bool v2 = false;  // deliver2, with flags and timeout
  unsigned flags = 0;
  long timeout = DSS_TIMEOUT_INFINITE;
  bool bad_flags = false;
  Payload local{};  // a blocking item's payload
  int rc = 0;
  bool in_window = false;  // all states closed throughout

  void* utilid() const { return reinterpret_cast<void*>(id); }
  // Done with sr or stale_rr: the result is counted.
  void leave() {
    if (sr) sr->inflight--;
    if (stale_rr) stale_rr->stale_inflight--;
  }
};

// Unregisters from a foreign thread, and calls queued() on live, stale and
// garbage ids, now and then.
void meddle(int s, int k) {
  if (uniform() < 0.002) unreg_counted(slot_reg(s, k), BY_PRODUCER, "unreg (producer)");
  const DSS_api_2v0_t* a2 = api2();
  if (a2 && uniform() < 0.01) {
    static const std::uintptr_t garbage[] = {1, 0xdeadbeef, ~std::uintptr_t(0), 12345};
    std::uintptr_t id = uniform() < 0.5 ? slot_utilid(s, k) : g_stale.pick_id();
    long q = a2->queued(reinterpret_cast<void*>(id));
    if (q < 0 && q != DSS_ERR_INVALID_UTILID) fail("queued(%#" PRIxPTR ") returned %ld", id, q);
    q = a2->queued(reinterpret_cast<void*>(garbage[t_rng() % 4]));
    if (q != DSS_ERR_INVALID_UTILID) fail("queued(garbage) returned %ld", q);
    st.queued_calls++;
  }
}

// Where d goes: now and then a stale utilid, else lib k of the state in
// slot s (the flooded registration favoured, and one made during close).
void pick_target(Delivery& d, int s, int k) {
  d.stale = uniform() < 0.03;
  if (d.stale) {
    d.stale_rr = g_stale.pick();
    if (d.stale_rr) {
      d.stale_rr->stale_inflight++;
      d.id = d.stale_rr->utilid;
      return;
    }
    d.stale = false;
  }
  d.sr = g_slots[std::size_t(s)].rec.load();
  if (d.sr) {
    d.sr->inflight++;
    int fk = d.sr->flood_k.load();
    if (fk >= 0 && uniform() < 0.5) k = fk;
    else if (d.sr->reg[LATE_K].load() && uniform() < 0.3) k = LATE_K;
    d.rr = d.sr->reg[k].load();
  }
  d.id = d.rr ? d.rr->utilid : 0;
}

// What d is: blocking or not (a burst is fire and forget), its action, and
// how it is delivered.
void pick_kind(Delivery& d, int& burst) {
  // Now and then a burst of fire-and-forget items, to build up queues.
  if (burst == 0 && uniform() < 0.01) burst = 1 + int(t_rng() % 400);
  d.blocking = burst ? (--burst, false) : uniform() < 0.4;
  if (!d.blocking) {
    d.action = ff_action();
  } else {
    double r = uniform();
    d.action = r < 0.1    ? A_DEC0
               : r < 0.45 ? A_CALL
               : r < 0.65 ? A_DROP
               : r < 0.9  ? A_HOLD
                          : A_CALL_TWICE;
  }
  // 1v0 deliver, or 2v0 deliver2 with flags and a timeout.
  d.v2 = api2() && uniform() < 0.6;
  if (!d.v2) return;
  st.v2++;
  if (uniform() < 0.3) d.flags |= DSS_DELIVER_NOWAIT;
  if (uniform() < 0.01) {
    static const unsigned bad[] = {0x2u, 0x80000000u, 0xfffffffeu, 0x10u};
    d.flags |= bad[t_rng() % 4];
    d.bad_flags = true;
    st.bad_flags++;
  }
  d.timeout = TIMEOUTS[t_rng() % (sizeof TIMEOUTS / sizeof TIMEOUTS[0])];
}

// Delivers p (d's payload): sets d.rc and d.in_window; deliver2 must
// return within its timeout (plus slack).
void deliver(Delivery& d, Payload* p, ProducerInfo& me) {
  g_items[d.idx].fetch_or(F_STARTED);
  std::uint64_t gen1 = g_window_gen.load();
  std::int64_t t0 = now_ns();
  me.enter_ns.store(t0);
  t_delivering = p;
  DSS_return_1v0_t ret = d.blocking ? stress_ret : nullptr;
  d.rc = d.v2 ? api2()->deliver2(d.utilid(), stress_decode, ret, p, d.flags, d.timeout)
              : api()->deliver(d.utilid(), stress_decode, ret, p);
  t_delivering = nullptr;
  std::int64_t t1 = now_ns();
  me.enter_ns.store(0);
  me.calls.fetch_add(1);
  std::uint64_t gen2 = g_window_gen.load();
  d.in_window = (gen1 & 1) && gen1 == gen2;
  if (d.in_window) st.window_delivers++;
  if (d.timeout >= 0 && double(t1 - t0) / 1e6 > double(d.timeout) + 10000 * opt.scale)
    fail("item %" PRIu64 ": deliver2 with timeout %ld ms took %.0f ms", d.idx, d.timeout,
         double(t1 - t0) / 1e6);
}

// A released blocking producer: its item ended once, as its action and
// what deliver returned say.
void check_release(const Delivery& d, std::uint8_t old) {
  st.releases++;
  if ((old & F_ENDS) != 1)
    fail("item %" PRIu64 ": producer released with the item ended %u times", d.idx,
         unsigned(old & F_ENDS));
  int action = d.action, answer = d.local.answer;
  bool ok;
  switch (answer) {
    case ANS_RETURNED: ok = action == A_CALL || action == A_CALL_TWICE || action == A_HOLD; break;
    case ANS_GARBAGE: ok = action == A_DROP || action == A_HOLD; break;
    case ANS_DEC0: ok = action == A_DEC0; break;
    case ANS_CANCELLED: ok = true; break;
    case ANS_TIMEDOUT: ok = d.rc == DSS_ERR_TIMEOUT; break;
    default: ok = false;
  }
  // What deliver2 returns says how the item ended.
  if (d.v2 && (answer == ANS_CANCELLED) != (d.rc == DSS_ERR_CANCELLED)) ok = false;
  if (d.v2 && (answer == ANS_TIMEDOUT) != (d.rc == DSS_ERR_TIMEOUT)) ok = false;
  if (!ok)
    fail("item %" PRIu64 ": released with rc %d, answer %d for action %d", d.idx, d.rc,
         answer, action);
}

// d's item was queued.
void accepted(Delivery& d) {
  st.accepted++;
  if (d.sr) d.sr->accepted++;
  std::uint8_t old = g_items[d.idx].fetch_or(F_ACCEPTED);
  if (d.stale) fail("item %" PRIu64 ": stale utilid %#" PRIxPTR " accepted", d.idx, d.id);
  if (d.in_window) fail("item %" PRIu64 ": accepted while all states were closed", d.idx);
  if (d.bad_flags)
    fail("item %" PRIu64 ": flags %#x accepted (rc %d)", d.idx, d.flags, d.rc);
  if (d.rc == DSS_ERR_CANCELLED) st.cancelled_v2++;
  if (d.blocking) check_release(d, old);
  d.leave();
}

// d's item was refused: with a code its delivery allows.
void refused(Delivery& d) {
  int rc = d.rc;
  refuse_item(d.idx, rc);
  bool ok = rc == DSS_ERR_INVALID_UTILID || rc == DSS_ERR_NOT_STARTED;
  if (d.v2) {
    bool room = rc == DSS_ERR_QUEUE_FULL || rc == DSS_ERR_TIMEOUT;
    if (rc == DSS_ERR_QUEUE_FULL) {
      st.queue_full++;
      ok = (d.flags & DSS_DELIVER_NOWAIT) || d.timeout == 0;
    } else if (rc == DSS_ERR_TIMEOUT) {
      st.timeout_noroom++;
      ok = d.timeout >= 0;
    } else if (rc == DSS_ERR_INVALID_ARGUMENT) {
      ok = d.bad_flags;
    }
    if (room && d.bad_flags) ok = false;
    if (room && d.sr) d.sr->rejected++;
  }
  if (!ok)
    fail("item %" PRIu64 ": deliver%s returned %d (flags %#x, timeout %ld)", d.idx,
         d.v2 ? "2" : "", rc, d.flags, d.timeout);
  if ((d.stale || d.in_window) && rc != DSS_ERR_INVALID_UTILID &&
      !(d.bad_flags && rc == DSS_ERR_INVALID_ARGUMENT))
    fail("item %" PRIu64 ": stale utilid: deliver returned %d, not INVALID_UTILID", d.idx, rc);
  d.leave();
}

// Delivers item idx; false if no state was opened yet.
bool produce(std::uint64_t idx, int& burst, ProducerInfo& me) {
  Delivery d;
  d.idx = idx;
  int s = int(t_rng() % std::uint64_t(opt.states));
  int k = int(t_rng() % NLIBS);
  meddle(s, k);
  pick_target(d, s, k);
  if (!api()) {  // no state opened yet
    g_items[idx].fetch_or(F_STARTED | F_REFUSED);
    d.leave();
    return false;
  }
  pick_kind(d, burst);
  d.local = {MAGIC, std::uint32_t(idx), d.action, d.blocking, d.utilid(), ANS_NONE, d.sr, d.rr};
  Payload* p = d.blocking ? &d.local : new Payload(d.local);
  (d.blocking ? st.blocking : st.ff)++;
  if (d.stale) st.stale++;
  deliver(d, p, me);
  // Did it queue the item? A TIMEOUT after the item was queued did.
  bool queued = delivered(d.rc) || (d.v2 && d.blocking && d.rc == DSS_ERR_CANCELLED) ||
                (d.v2 && d.blocking && d.rc == DSS_ERR_TIMEOUT && d.local.answer == ANS_TIMEDOUT);
  if (queued) {
    accepted(d);
    return true;
  }
  refused(d);
  if (!d.blocking) delete p;
  // Back off a little, as a client would: refusals are instant, and
  // would otherwise crowd out the deliveries that get through.
  sleep_us(std::int64_t(20 + t_rng() % 80));
  return true;
}

}  // namespace

void producer_thread(int pi) {
  t_rng.seed(opt.seed * 7919u + 1000u + std::uint64_t(pi));
  ProducerInfo& me = g_prod[std::size_t(pi)];
  int burst = 0;
  while (!g_stop.load()) {
    std::uint64_t idx = g_next_item.fetch_add(1);
    if (idx >= opt.items) {
      g_stop = true;
      break;
    }
    if (!produce(idx, burst, me)) {
      std::this_thread::yield();
      continue;
    }
    if (uniform() < 0.01) sleep_us(std::int64_t(t_rng() % 300));
  }
  g_producers_exited.fetch_add(1);
}

}  // namespace stress
