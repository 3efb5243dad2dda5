// bench-api.cpp -- API 2v0 deliver2 against 1v0 deliver, and the bounded
// queue (setmaxqueue) against the unbounded one, dispatch() draining in a busy
// loop. A rows; A4 is a must (the bound held).
#include <algorithm>

#include "runner.h"

namespace bench {

namespace {

struct ApiRun {
  std::vector<double> v1, v2, f1, f2, bq, ub, mq;
};

// One repetition of every A row, in turn.
void measure(ApiRun& m, long n, long n_fill) {
  FfRun a;
  a.drain = Drain::dispatch;
  m.v1.push_back(ours_ff(a, n).rate);
  a.v2 = true;
  m.v2.push_back(ours_ff(a, n).rate);
  double fa = 0, fb = 0;
  ours_drain_at_depth(n_fill, &fa, Drain::dispatch, false);
  ours_drain_at_depth(n_fill, &fb, Drain::dispatch, true);
  m.f1.push_back(fa);
  m.f2.push_back(fb);
  FfRun b;
  b.producers = 4;
  b.drain = Drain::dispatch;
  m.ub.push_back(ours_ff(b, n).rate);
  b.maxqueue = 1024;
  FfStats s = ours_ff(b, n);
  m.bq.push_back(s.rate);
  m.mq.push_back(s.maxqueued);
}

}  // namespace

void api_rows(Results& res) {
  header("### API 2v0 deliver2, and the bounded queue (dispatch() drains, busy loop)");
  ApiRun m;
  long n_fill = scaled(100000);
  for (int r = 0; r < opt.reps; ++r) measure(m, scaled(2000000), n_fill);
  double a1 = median(m.v1), a2 = median(m.v2), b = median(m.bq), ub = median(m.ub);
  double f1 = median(m.f1), f2 = median(m.f2);
  double mq = *std::max_element(m.mq.begin(), m.mq.end());
  row("A1", "ours: 1v0 deliver → dispatch(), 1P", fmt_rate(a1), fmt_ratio(a1, res.ceil_at(1)), "", "");
  row("A2", "ours: 2v0 deliver2 (flags 0, no timeout) → dispatch(), 1P", fmt_rate(a2),
      fmt_ratio(a2, res.ceil_at(1)), "", "vs 1v0 (A1) " + fmt_ratio(a2, a1) + " (should be ~1)");
  row("A3", "ours: fill to " + depth_name(n_fill) + " with deliver2 (no consumer)", fmt_rate(f2),
      "", "", "vs 1v0 deliver " + fmt_ratio(f2, f1) + " (it fills at " + fmt_rate(f1) + ")");
  row("A4", "ours: setmaxqueue(1024), 4P deliver → dispatch()", fmt_rate(b),
      fmt_ratio(b, res.ceil_at(4)), "",
      "vs unbounded, same reps " + fmt_ratio(b, ub) + "; stats maxqueued " + fmt("%.0f", mq) +
          " (must be ≤ 1024)");
  must(mq <= 1024, "A4: stats().maxqueued " + fmt("%.0f", mq) + " with setmaxqueue(1024)");
  res.bounded = b;
  res.unbounded = ub;
}

}  // namespace bench
