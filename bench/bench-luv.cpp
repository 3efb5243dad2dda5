// bench-luv.cpp -- the luv rows: figures bench/luv.lua measured in the same
// invocation (Debian lua-luv, run by the lua interpreter), handed in with
// --luv FILE, against the ceilings and ours of this run. L rows.
#include "runner.h"

namespace bench {

void luv_rows(const Results& res) {
  header("### luv (Debian lua-luv, same invocation, run by the lua interpreter)");
  double sent = luv_get("flood_sent"), got = luv_get("flood_delivered");
  double work = luv_get("work_rate"), rt = luv_get("rt_rate");
  row("L1", "async:send flood from a thread: values delivered / sent",
      fmt("%.0f", got) + " / " + fmt("%.0f", sent), "", "",
      fmt("%.1f%% lost", 100.0 * (1 - got / sent)));
  row("L2", "lossless route: uv.new_work (thread pool → Lua), items/s", fmt_rate(work),
      fmt_ratio(work, res.ceil_at(1)), "",
      "ours 1P: poll() (F1) " + fmt_ratio(res.at(kPoll, 1), work) + ", dispatch() (F5) " +
          fmt_ratio(res.at(kDispatch, 1), work));
  RtStats l{rt, luv_get("rt_p50"), luv_get("rt_p99"), luv_get("rt_p999")};
  row("L3", "blocking round trip (async:send + pipe reply): round trips/s", fmt_rate(rt),
      fmt_ratio(rt, res.rt_ceil_sleep.rate) + " (vs eventfd)", "",
      "p50 / p99 / p99.9 " + p50_p99_p999(l));
}

}  // namespace bench
