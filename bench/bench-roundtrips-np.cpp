// bench-roundtrips-np.cpp -- blocking round trips with 1, 2, 4 and 8
// producers (issue 17, item 1): each producer a C thread in a blocking 1v0
// deliver, answered by the Lua side busy (dispatch(), yield when it ran
// nothing) or asleep (wait(), then dispatch()); the rate counts every
// producer's round trips, the latency is measured around each deliver. The
// ceiling, measured in the same run with the same producer count: a mutex +
// deque of requests, each producer waiting on its request's own condition
// variable (an answer wakes only the producer it answers), the consumer
// pcalling a trivial Lua function per request, spinning or asleep on a
// condition variable when the queue is empty. B rows; at the end of the
// suite, the "Targets (issue 17)" block (TB rows) judges them.
#include "runner.h"

namespace bench {

namespace {

struct Style {
  const char* what;
  Wake ours;
  CeilWake ceiling;
  long count;  // round trips per run, all producers together
};

// One producer count of one style: ceiling and ours, --reps times,
// interleaved; the runs with the median rate.
Blocking measure(const Style& s, int p) {
  std::vector<RtStats> vc, vo;
  for (int r = 0; r < opt.reps; ++r) {
    vc.push_back(ceil_roundtrip(s.count, s.ceiling, p));
    vo.push_back(ours_roundtrip(s.count, s.ours, p));
  }
  return {"", std::string(s.what) + ", " + std::to_string(p) + "P", med_rt(vo), med_rt(vc)};
}

std::string p50_p99_ratios(const RtStats& o, const RtStats& c) {
  return fmt_ratio(o.p50, c.p50) + " (p50), " + fmt_ratio(o.p99, c.p99) + " (p99)";
}

void b_rows(const Blocking& b) {
  row(b.id + "a", b.what + ": round trips/s", fmt_rate(b.ours.rate),
      fmt_ratio(b.ours.rate, b.ceiling.rate), "", "ceiling " + fmt_rate(b.ceiling.rate));
  row(b.id + "b", b.what + ": p50 / p99 / p99.9", p50_p99_p999(b.ours),
      p50_p99_ratios(b.ours, b.ceiling), "", "ceiling " + p50_p99_p999(b.ceiling));
}

std::string us(double v) { return fmt("%.1f µs", v); }

}  // namespace

void round_trips_np(Results& res) {
  header("### Blocking round trips, 1-8 producers (each a C thread in a blocking 1v0 deliver; "
         "latency measured around deliver; ceiling: one condition variable per waiting producer)");
  const Style styles[] = {
      {"busy Lua loop (dispatch(), yield when empty)", Wake::dispatch, CeilWake::spin,
       scaled(24000)},
      {"sleeping Lua loop (wait(), then dispatch())", Wake::wait, CeilWake::cv, scaled(12000)},
  };
  int k = 1;
  for (const Style& s : styles)
    for (int p : PRODUCERS) {
      Blocking b = measure(s, p);
      b.id = "B" + std::to_string(k++);
      b_rows(b);
      res.blocking.push_back(b);
    }
}

// --rt-one P STYLE [--rt-ceil]: one run (for profiling), rate and p50 printed.
void rt_one() {
  bool wait = opt.rt_style == 1;
  long n = scaled(wait ? 12000 : 24000);
  RtStats r = opt.rt_ceil ? ceil_roundtrip(n, wait ? CeilWake::cv : CeilWake::spin, opt.rt_p)
                          : ours_roundtrip(n, wait ? Wake::wait : Wake::dispatch, opt.rt_p);
  double k = double(n);
  std::printf("%s %dP %s: %.0f/s p50 %.1f p99 %.1f; consumer per item: user %.2f us sys %.2f us "
              "vcs %.2f ivcs %.2f\n", opt.rt_ceil ? "ceiling" : "ours",
              opt.rt_p, wait ? "wait" : "busy", r.rate, r.p50, r.p99, g_consumer.user_us / k,
              g_consumer.sys_us / k, g_consumer.vcs / k, g_consumer.ivcs / k);
}

void targets_17(const Results& res) {
  targets_header("### Targets (issue 17): blocking round trips vs their ceilings (B rows above)");
  int k = 1;
  for (const Blocking& b : res.blocking) {
    const RtStats &o = b.ours, &c = b.ceiling;
    target_row("TB", k++, {"rate, " + b.id + "a vs its ceiling", o.rate, c.rate, 0.8, false,
                           "ours " + fmt_rate(o.rate) + ", ceiling " + fmt_rate(c.rate)});
    target_row("TB", k++, {"p50, " + b.id + "b vs its ceiling", o.p50, c.p50, 1.2, true,
                           "ours " + us(o.p50) + ", ceiling " + us(c.p50)});
    target_row("TB", k++, {"p99, " + b.id + "b vs its ceiling", o.p99, c.p99, 1.5, true,
                           "ours " + us(o.p99) + ", ceiling " + us(c.p99)});
  }
}

}  // namespace bench
