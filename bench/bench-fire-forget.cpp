// bench-fire-forget.cpp -- fire and forget, producers and consumer running
// together: the ceilings (C rows), ours taking the items with poll() or
// dispatch() in a busy loop (F rows; F1-F4 also against the 1.0-style
// ceiling C13-C16), and ours asleep on getfd() (W rows),
// repetitions interleaved so that a swing in the machine's load hits
// ceilings and ours alike. Writes throughput.dat.
#include "runner.h"

namespace bench {

namespace {

// One producer count: every style, --reps times, interleaved; medians.
void measure(Results& res, int p) {
  long n_ceil = scaled(2000000), n_ours = scaled(1000000);
  std::map<int, std::vector<double>> v;
  std::vector<double> cw, fn, fp;
  for (int r = 0; r < opt.reps; ++r) {
    for (CeilStyle s : ceil_styles()) {
      double w = 0;
      v[int(s)].push_back(ceil_throughput(p, n_ceil, s, &w));
      if (s == CeilStyle::swap) cw.push_back(w);
    }
    v[kPoll].push_back(ours_throughput(p, n_ours, Drain::poll));
    v[kDispatch].push_back(ours_throughput(p, n_ceil, Drain::dispatch));
    FfRun fr;
    fr.producers = p;
    fr.drain = Drain::fd;
    FfStats f = ours_ff(fr, n_ceil);
    v[kFd].push_back(f.rate);
    fn.push_back(f.notices);
    fp.push_back(f.polls);
  }
  for (auto& kv : v) res.tp[{kv.first, p}] = median(kv.second);
  res.ceil_writes[p] = median(cw);
  res.fd_notices[p] = median(fn);
  res.fd_polls[p] = median(fp);
}

void ours_rows(const Results& res) {
  double luv_lossless = luv_get("work_rate");
  int k = 1;
  for (int p : PRODUCERS) {
    double v = res.at(kPoll, p);
    std::string c10 = "C" + std::to_string(k + 12);  // C13-C16: the 1.0-style ceiling
    row("F" + std::to_string(k++),
        "ours: deliver → poll() + cb(unpack(args)), " + std::to_string(p) + "P",
        fmt_rate(v), fmt_ratio(v, res.ceil_at(p)), fmt_ratio(v, luv_lossless),
        "vs table ceiling " + fmt_ratio(v, res.at(int(CeilStyle::table), p)) +
            "; vs 1.0-style ceiling (" + c10 + ") " +
            fmt_ratio(v, res.at(int(CeilStyle::pop1_args), p)));
  }
  for (int p : PRODUCERS) {
    double v = res.at(kDispatch, p);
    std::string notes =
        "vs poll() (F" + std::to_string(k - 4) + ") " + fmt_ratio(v, res.at(kPoll, p));
    if (p > 1) notes += "; vs 1P " + fmt_ratio(v, res.at(kDispatch, 1));
    row("F" + std::to_string(k++), "ours: deliver → dispatch(), " + std::to_string(p) + "P",
        fmt_rate(v), fmt_ratio(v, res.ceil_at(p)), fmt_ratio(v, luv_lossless), notes);
  }
}

void sleeping_rows(const Results& res) {
  header("### Sleeping consumer: poll(2) on getfd(), then dispatch() (producers flooding)");
  double luv_lossless = luv_get("work_rate");
  int k = 1;
  for (int p : PRODUCERS) {
    double v = res.at(kFd, p);
    std::string notes = "vs busy dispatch() (F" + std::to_string(k + 4) + ") " +
                        fmt_ratio(v, res.at(kDispatch, p));
    row("W" + std::to_string(k++), "ours: items/s, " + std::to_string(p) + "P", fmt_rate(v),
        fmt_ratio(v, res.ceil_at(p)), fmt_ratio(v, luv_lossless), notes);
  }
  for (int p : PRODUCERS) {
    double notices = res.fd_notices.at(p), writes = res.ceil_writes.at(p);
    row("W" + std::to_string(k++),
        "ours: wake-up writes per item (stats: notified / delivered), " + std::to_string(p) + "P",
        pct(notices), fmt_ratio(notices, writes), "",
        "ceiling's eventfd writes " + pct(writes) + "; poll(2) calls " +
            pct(res.fd_polls.at(p)) + " of items");
  }
}

void write_dat(const Results& res) {
  FILE* f = dat("throughput.dat");
  if (!f) return;
  std::fprintf(f, "# producers ceiling_swap ceiling_table ceiling_pop1 ours_poll ours_dispatch"
                  " ours_fd_dispatch (items/s)\n");
  for (int p : PRODUCERS) {
    std::fprintf(f, "%d", p);
    for (int s = 0; s <= kFd; ++s) std::fprintf(f, " %.0f", res.at(s, p));
    std::fprintf(f, "\n");
  }
  std::fclose(f);
}

}  // namespace

void fire_and_forget(Results& res) {
  header(("### Fire and forget, producers and consumer running together (" + opt.label + ")")
             .c_str());
  for (int p : PRODUCERS) measure(res, p);
  ceiling_rows(res);
  ours_rows(res);
  sleeping_rows(res);
  write_dat(res);
}

}  // namespace bench
