// bench-targets.cpp -- the targets of issue 18, at the end of the full
// suite: each a ratio of two figures of this same run (rows above), its
// target, and whether this run met it. Never asserted: a missed target
// changes no exit code (only the "must" rows do).
#include "runner.h"

namespace bench {

void targets_header(const char* title) {
  std::printf("\n%s\n\n| # | ratio of | measured | target | met | notes |\n"
              "|---|---|---|---|---|---|\n", title);
}

void target_row(const char* prefix, int k, const Target& t) {
  std::string ratio = fmt_ratio(t.ours, t.reference);
  std::string goal = (t.at_most ? "≤ " : "≥ ") + fmt("%.1f×", t.target);
  std::string met = "not measured";
  if (!ratio.empty()) {
    double r = t.ours / t.reference;
    met = !t.judged ? "—" : (t.at_most ? r <= t.target : r >= t.target) ? "met" : "missed";
  }
  std::printf("| %s%d | %s | %s | %s | %s | %s |\n", prefix, k, t.what.c_str(), ratio.c_str(),
              goal.c_str(), met.c_str(), t.notes.c_str());
  std::fflush(stdout);
}

namespace {

bool is_luajit() {
  lua_State* L = new_state();
  lua_getglobal(L, "jit");
  bool yes = !lua_isnil(L, -1);
  lua_close(L);
  return yes;
}

double p99(const Results& res, const char* loop) {
  auto it = res.loops.find(loop);
  return it == res.loops.end() ? -1 : it->second.p99;
}

std::vector<Target> throughput_targets(const Results& res) {
  std::vector<Target> ts;
  for (const Fill& f : res.fills)
    ts.push_back({"fill vs bare push (" + f.id + " vs its ceiling)", f.ours, f.ceiling, 0.6,
                  false, "ours " + fmt_rate(f.ours) + ", ceiling " + fmt_rate(f.ceiling)});
  ts.push_back({"dispatch(), 8P vs 1P (F8 vs F5)", res.at(kDispatch, 8), res.at(kDispatch, 1),
                0.7, false, ""});
  ts.push_back({"bounded vs unbounded, setmaxqueue(1024), 4P (A4)", res.bounded, res.unbounded,
                0.7, false, ""});
  bool jit = is_luajit();
  Target d{"dispatch() vs the args-table ceiling, 1P (F5 vs C5)", res.at(kDispatch, 1),
           res.at(int(CeilStyle::table), 1), 0.7, false,
           jit ? "LuaJIT target; this binary is LuaJIT"
               : "LuaJIT target; this binary: " + opt.label + ", not judged"};
  d.judged = jit;
  ts.push_back(d);
  return ts;
}

// The 1.0-style poll() path (one item per poll(), a new args table,
// cb(unpack(args))) against its own ceiling, C13-C16.
void poll_targets(const Results& res, std::vector<Target>& ts) {
  for (int i = 0; i < 4; ++i) {
    int p = PRODUCERS[i];
    ts.push_back({"1.0-style poll() path vs its ceiling, " + std::to_string(p) + "P (F" +
                      std::to_string(i + 1) + " vs C" + std::to_string(i + 13) + ")",
                  res.at(kPoll, p), res.at(int(CeilStyle::pop1_args), p), 0.7, false, ""});
  }
}

}  // namespace

void target_rows(const Results& res) {
  targets_header("### Targets (issue 18): ratios of this run's rows above");
  std::vector<Target> ts = throughput_targets(res);
  ts.push_back({"UDP per-item mode vs bare sendto (U1 vs U0)", res.udp_item, res.udp_bare, 0.8,
                false, ""});
  double cq = p99(res, "cqueues"), luv = p99(res, "luv");
  ts.push_back({"cqueues loop p99 vs luv loop p99 (E2 vs E1)", cq, luv, 2.0, true,
                cq >= 0 && luv > 0 ? "cqueues " + fmt("%.1f µs", cq) + ", luv " + fmt("%.1f µs", luv) : ""});
  poll_targets(res, ts);
  int k = 1;
  for (const Target& t : ts) target_row("T", k++, t);
}

}  // namespace bench
