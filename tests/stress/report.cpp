// report.cpp -- the stress harness's counters and its accounting: every
// item's flags, counted at the end (lost, doubled, ...), and the summary
// lines (see stress.cpp).
#include <cstdio>

#include "runner.h"

namespace stress {

Stats st;
std::unique_ptr<std::atomic<std::uint8_t>[]> g_items;
std::atomic<std::uint64_t> g_next_item{0};

void update_max(std::atomic<std::uint64_t>& m, std::uint64_t v) {
  std::uint64_t cur = m.load();
  while (v > cur && !m.compare_exchange_weak(cur, v)) {
  }
}

void refuse_item(std::uint64_t idx, int rc) {
  st.refused++;
  if (rc == DSS_ERR_NOT_STARTED) st.not_started++;
  std::uint8_t old = g_items[idx].fetch_or(F_REFUSED);
  if (old & (F_ENDS | F_DECODES))
    fail("item %" PRIu64 ": refused (%d) but its callbacks ran", idx, rc);
}

Result account() {
  Result r;
  r.issued = g_next_item.load();
  if (r.issued > opt.items) r.issued = opt.items;
  for (std::uint64_t i = 0; i < r.issued; ++i) {
    std::uint8_t b = g_items[i].load();
    unsigned ends = b & F_ENDS;
    unsigned decodes = (b & F_DECODES) / F_DEC_ONE;
    if (decodes > 1) ++r.doubled;
    if (b & F_ACCEPTED) {
      if (ends == 0) ++r.lost;
      else if (ends > 1) ++r.doubled;
    } else if (b & F_REFUSED) {
      if (ends || decodes) ++r.refused_called;
    } else if (b & F_STARTED) {
      ++r.unfinished;  // deliver never returned
    }
  }
  return r;
}

void summary(const Result& r, double secs, bool passed) {
  std::printf(
      "stress: seed=%" PRIu64 " items=%" PRIu64 " accepted=%" PRIu64
      " refused=%" PRIu64 " refused_closing=%" PRIu64 " blocking=%" PRIu64 " fire_and_forget=%" PRIu64
      " states_opened=%" PRIu64 " states_closed=%" PRIu64
      " all_closed_moments=%" PRIu64 " cancels=%" PRIu64
      " client_cancels=%" PRIu64 " releases=%" PRIu64 " returned=%" PRIu64
      " garbage=%" PRIu64 " decoded=%" PRIu64 " decoder0=%" PRIu64
      " unregs=%" PRIu64 " reregs=%" PRIu64 " stale=%" PRIu64
      " max_queue_depth=%" PRIu64
      " deliver2=%" PRIu64 " timedout_queued=%" PRIu64 " timedout_pending=%" PRIu64
      " queue_full=%" PRIu64 " timeout_noroom=%" PRIu64 " cancelled_v2=%" PRIu64
      " bad_flags=%" PRIu64 " queued_calls=%" PRIu64 " deadlock_probes=%" PRIu64
      " raised=%" PRIu64 " dispatched=%" PRIu64 " waits=%" PRIu64 " wait_timeouts=%" PRIu64
      " fd_wakeups=%" PRIu64 " fd_spurious=%" PRIu64 " datagrams=%" PRIu64
      " coalesce_modes=%" PRIu64 " mode_switches=%" PRIu64 " maxqueue_changes=%" PRIu64
      " stats_checks=%" PRIu64 " own_items=%" PRIu64
      " fin_states=%" PRIu64 " fin_runs=%" PRIu64 " fin_decoded=%" PRIu64
      " fin_regs=%" PRIu64 " fin_reg_refused=%" PRIu64 " fin_items=%" PRIu64
      " cancel_checks=%" PRIu64 " floods=%" PRIu64 " flood_items=%" PRIu64
      " decode_unregs=%" PRIu64 " unreg_overlaps=%" PRIu64 " unreg_spanning=%" PRIu64
      " lost=%" PRIu64 " doubled=%" PRIu64 " hung=%d late=%" PRIu64
      " errors=%d duration=%.1fs\n",
      opt.seed, r.issued, st.accepted.load(), st.refused.load(), st.not_started.load(),
      st.blocking.load(), st.ff.load(), st.states_opened.load(),
      st.states_closed.load(), st.windows.load(), st.cancels.load(),
      st.client_cancels.load(), st.releases.load(), st.returned.load(),
      st.garbage.load(), st.decoded.load(), st.dec0.load(), st.unregs.load(),
      st.reregs.load(), st.stale.load(), st.max_queue.load(), st.v2.load(),
      st.timedout_queued.load(), st.timedout_pending.load(), st.queue_full.load(),
      st.timeout_noroom.load(), st.cancelled_v2.load(), st.bad_flags.load(),
      st.queued_calls.load(), st.deadlock_probes.load(), st.raised.load(),
      st.dispatched.load(), st.waits.load(), st.wait_timeouts.load(), st.fd_wakeups.load(),
      st.fd_spurious.load(), st.datagrams.load(), st.coalesce_modes.load(),
      st.mode_switches.load(), st.maxqueue_changes.load(), st.stats_checks.load(),
      st.self_items.load(), st.fin_states.load(), st.fin_runs.load(), st.fin_decoded.load(),
      st.fin_regs.load(), st.fin_reg_refused.load(), st.fin_items.load(),
      st.cancel_checks.load(), st.floods.load(), st.flood_items.load(),
      st.decode_unregs.load(), st.unreg_overlaps.load(), st.unreg_spanning.load(), r.lost,
      r.doubled, st.hung.load(), st.late.load(), g_errors.load(), secs);
  sessions_summary();
  std::printf("stress: %d passed, %d failed\n", passed ? 1 : 0, passed ? 0 : 1);
  std::fflush(stdout);
}

}  // namespace stress
