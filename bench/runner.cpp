// runner.cpp -- dss_bench's main: the options, the order of the suite, and
// the markdown table every scenario prints its rows into (runner.h).
#include <algorithm>
#include <cmath>

#include "runner.h"

#include <malloc.h>
#include <unistd.h>

#ifndef DSS_BENCH_MODULE_DIR
#define DSS_BENCH_MODULE_DIR "."
#endif
#ifndef DSS_BENCH_LUA_DIR
#define DSS_BENCH_LUA_DIR "."
#endif

namespace bench {

long rss_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

long heap_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return long(mi.uordblks + mi.hblkhd);
}

Options opt;
const int PRODUCERS[4] = {1, 2, 4, 8};

double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double now_ns() {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count());
}

long scaled(long n) { return std::max(1000L, long(double(n) * opt.scale)); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

RtStats percentiles(std::vector<double>& lat, double seconds) {
  std::sort(lat.begin(), lat.end());
  auto at = [&](double p) { return lat[size_t(p * double(lat.size() - 1))]; };
  RtStats r;
  r.rate = double(lat.size()) / seconds;
  r.p50 = at(0.50);
  r.p99 = at(0.99);
  r.p999 = at(0.999);
  return r;
}

double Results::at(int kind, int producers) const {
  auto it = tp.find({kind, producers});
  return it == tp.end() ? -1 : it->second;
}

// --- the table -------------------------------------------------------------------------

std::string fmt_rate(double v) {
  char b[64];
  if (v >= 1e6) std::snprintf(b, sizeof b, "%.2f M/s", v / 1e6);
  else if (v >= 1e3) std::snprintf(b, sizeof b, "%.1f k/s", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f /s", v);
  return b;
}

std::string fmt_ratio(double a, double b) {
  if (!(b > 0) || !(a >= 0)) return "";
  char s[32];
  double r = a / b;
  if (r >= 10) std::snprintf(s, sizeof s, "%.0f×", r);
  else if (r >= 0.1) std::snprintf(s, sizeof s, "%.2f×", r);
  else std::snprintf(s, sizeof s, "%.3f×", r);
  return s;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string pct(double frac) {  // two significant digits, no exponent
  double v = 100.0 * frac;
  if (!(v > 0)) return "0 %";
  int decimals = std::max(0, 1 - int(std::floor(std::log10(v))));
  char b[64];
  std::snprintf(b, sizeof b, "%.*f %%", decimals, v);
  return b;
}

std::string depth_name(long d) {
  if (d >= 1000000) return std::to_string(d / 1000000) + " M";
  return std::to_string(d / 1000) + " k";
}

std::string p50_p99_p999(const RtStats& r) {
  return fmt("%.1f", r.p50) + " / " + fmt("%.1f", r.p99) + " / " + fmt("%.0f µs", r.p999);
}

void row(const std::string& id, const std::string& what, const std::string& figure,
         const std::string& vs_ceil, const std::string& vs_luv, const std::string& notes) {
  std::printf("| %s | %s | %s | %s | %s | %s |\n", id.c_str(), what.c_str(),
              figure.c_str(), vs_ceil.c_str(), vs_luv.c_str(), notes.c_str());
  std::fflush(stdout);
}

void header(const char* title) {
  std::printf("\n%s\n\n| # | row | figure | vs ceiling | vs luv | notes |\n"
              "|---|---|---|---|---|---|\n", title);
}

FILE* dat(const char* name) {
  if (opt.out_dir.empty()) return nullptr;
  std::string p = opt.out_dir + "/" + name;
  return std::fopen(p.c_str(), "w");
}

std::vector<std::string> violations;
void must(bool ok, const std::string& what) {
  if (!ok) violations.push_back(what);
}

// --- luv's figures (--luv FILE) ------------------------------------------------------------

std::map<std::string, double> luv;

double luv_get(const char* key) {
  auto it = luv.find(key);
  return it == luv.end() ? -1 : it->second;
}

bool have_luv() { return !luv.empty(); }

void load_luv() {
  if (opt.luv_file.empty()) return;
  FILE* f = std::fopen(opt.luv_file.c_str(), "r");
  if (!f) return;
  char key[128];
  double v;
  while (std::fscanf(f, "%127s %lf", key, &v) == 2) luv[key] = v;
  std::fclose(f);
}

// --- the suite ------------------------------------------------------------------------------

void full() {
  Results res;
  fire_and_forget(res);
  drain_at_depth(res);
  round_trips(res);
  round_trips_np(res);
  loop_rows(res);
  udp_rows(res);
  api_rows(res);
  memory_rows();
  session_rows(res);
  if (have_luv()) luv_rows(res);
  target_rows(res);
  targets_17(res);
  targets_15(res);
}

bool parse(int argc, char** argv) {
  opt.module_dir = DSS_BENCH_MODULE_DIR;
  opt.lua_dir = DSS_BENCH_LUA_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--module-dir") opt.module_dir = next();
    else if (a == "--lua-dir") opt.lua_dir = next();
    else if (a == "--out-dir") opt.out_dir = next();
    else if (a == "--luv") opt.luv_file = next();
    else if (a == "--label") opt.label = next();
    else if (a == "--reps") opt.reps = std::atoi(next().c_str());
    else if (a == "--scale") opt.scale = std::atof(next().c_str());
    else if (a == "--quick") opt.quick = true;
    else if (a == "--poll") opt.poll_probe = std::atoi(next().c_str());
    else if (a == "--loops") opt.loops = true;
    else if (a == "--udp") opt.udp = true;
    else if (a == "--rt") opt.rt = true;
    else if (a == "--sessions") opt.sessions = true;
    else if (a == "--rt-ceil") opt.rt_ceil = true;
    else if (a == "--rt-one") {
      opt.rt_p = std::atoi(next().c_str());
      opt.rt_style = next() == "wait" ? 1 : 0;
    }
    else return false;
  }
  return true;
}

}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  if (!parse(argc, argv)) {
    std::fprintf(stderr,
                 "usage: dss_bench [--quick | --poll P | --loops | --udp | --rt | --sessions] [--reps N] [--scale X] [--label L]\n"
                 "                 [--module-dir D] [--lua-dir D] [--out-dir D] [--luv FILE]\n");
    return 2;
  }
  if (opt.label.empty()) opt.label = LUA_VERSION;
  load_luv();
  Results res;
  if (opt.poll_probe > 0) poll_probe(opt.poll_probe);
  else if (opt.loops) loop_rows(res);
  else if (opt.udp) udp_rows(res);
  else if (opt.rt_p > 0) rt_one();
  else if (opt.rt) {
    round_trips_np(res);
    targets_17(res);
  }
  else if (opt.sessions) {
    session_rows(res);
    targets_15(res);
  }
  else if (opt.quick) quick();
  else full();
  for (auto& v : violations) std::fprintf(stderr, "bench: FAILED: %s\n", v.c_str());
  return violations.empty() ? 0 : 3;
}
