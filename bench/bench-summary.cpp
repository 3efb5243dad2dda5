// bench-summary.cpp -- the short modes: --quick, one summary line per Lua
// version (run.sh collects them into one table), and --poll P, the poll()
// path against the table ceiling (for working on that path).
#include "runner.h"

namespace bench {

void quick() {
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  std::vector<double> cs, cts, os, ds, p50s, rates;
  for (int i = 0; i < opt.reps; ++i) {  // interleaved, as in the full suite
    cs.push_back(ceil_throughput(1, n_ceil, CeilStyle::swap));
    cts.push_back(ceil_throughput(1, n_ceil, CeilStyle::table));
    os.push_back(ours_throughput(1, n_ours, Drain::poll));
    ds.push_back(ours_throughput(1, n_ceil, Drain::dispatch));
    RtStats r = ours_roundtrip(scaled(20000), Wake::busy);
    p50s.push_back(r.p50);
    rates.push_back(r.rate);
  }
  double c = median(cs), ct = median(cts), o = median(os), d = median(ds);
  std::printf("| %s | %s | %s | %s (%s) | %s (%s) | %s | %.1f µs |\n", opt.label.c_str(),
              fmt_rate(c).c_str(), fmt_rate(ct).c_str(), fmt_rate(o).c_str(),
              fmt_ratio(o, c).c_str(), fmt_rate(d).c_str(), fmt_ratio(d, c).c_str(),
              fmt_rate(median(rates)).c_str(), median(p50s));
}

void poll_probe(int p) {
  long n = scaled(1000000);
  std::vector<double> ct, po, di;
  for (int i = 0; i < opt.reps; ++i) {
    ct.push_back(ceil_throughput(p, n, CeilStyle::table));
    po.push_back(ours_throughput(p, n, Drain::poll));
    di.push_back(ours_throughput(p, n, Drain::dispatch));
  }
  std::printf("%dP: table ceiling %s, poll() %s (%s), dispatch() %s\n", p,
              fmt_rate(median(ct)).c_str(), fmt_rate(median(po)).c_str(),
              fmt_ratio(median(po), median(ct)).c_str(), fmt_rate(median(di)).c_str());
  std::vector<double> cd, pd;
  for (int i = 0; i < opt.reps; ++i) {
    cd.push_back(ceil_drain_at_depth(scaled(100000), nullptr, CeilStyle::table));
    pd.push_back(ours_drain_at_depth(scaled(100000), nullptr, Drain::poll));
  }
  std::printf("drain alone, 100 k: table ceiling %s, poll() %s (%s)\n",
              fmt_rate(median(cd)).c_str(), fmt_rate(median(pd)).c_str(),
              fmt_ratio(median(pd), median(cd)).c_str());
}

}  // namespace bench
