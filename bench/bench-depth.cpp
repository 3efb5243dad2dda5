// bench-depth.cpp -- queue depth: fill with no consumer, then drain alone
// (1 producer), ours with poll() and dispatch() against the swap ceiling.
// D rows; the fill rows are kept for the targets.
#include "runner.h"

namespace bench {

namespace {

struct DepthRun {
  double ceil_drain, poll_drain, dispatch_drain, ceil_fill, ours_fill;  // medians, items/s
};

DepthRun measure(long depth) {
  std::vector<double> cfs, ofs, cds, ods, dds;
  for (int r = 0; r < opt.reps; ++r) {
    double cf = 0, of = 0;
    cds.push_back(ceil_drain_at_depth(depth, &cf));
    ods.push_back(ours_drain_at_depth(depth, &of, Drain::poll));
    dds.push_back(ours_drain_at_depth(depth, nullptr, Drain::dispatch));
    cfs.push_back(cf);
    ofs.push_back(of);
  }
  return {median(cds), median(ods), median(dds), median(cfs), median(ofs)};
}

}  // namespace

void drain_at_depth(Results& res) {
  header("### Queue depth: fill with no consumer, then drain alone (1 producer)");
  int k = 1;
  for (long depth : {1000L, 10000L, 100000L, 1000000L}) {
    if (opt.scale < 1) depth = scaled(depth);  // smoke runs
    DepthRun m = measure(depth);
    std::string d = depth_name(depth);
    row("D" + std::to_string(k++), "ours: drain " + d + " queued items, poll()",
        fmt_rate(m.poll_drain), fmt_ratio(m.poll_drain, m.ceil_drain), "",
        "ceiling drains at " + fmt_rate(m.ceil_drain));
    row("D" + std::to_string(k++), "ours: drain " + d + " queued items, dispatch()",
        fmt_rate(m.dispatch_drain), fmt_ratio(m.dispatch_drain, m.ceil_drain), "",
        "vs poll() " + fmt_ratio(m.dispatch_drain, m.poll_drain));
    std::string id = "D" + std::to_string(k++);
    row(id, "ours: fill to " + d + " (deliver, no consumer)", fmt_rate(m.ours_fill),
        fmt_ratio(m.ours_fill, m.ceil_fill), "", "ceiling fills at " + fmt_rate(m.ceil_fill));
    res.fills.push_back({id, m.ours_fill, m.ceil_fill});
  }
}

}  // namespace bench
