// bench-udp.cpp -- UDP notification (1 producer flooding; a socket.select
// loop drains): per-item mode (the dss helper; against a bare sendto of the
// notice) and coalesced mode (a datagram only when the queue goes from empty
// to non-empty). U rows; U9 is a must (no item stranded).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "runner.h"

namespace bench {

namespace {

// The calling thread's CPU time (user + system), seconds: on a loaded
// machine the rates swing with the load, the CPU per item much less.
double thread_cpu() {
  rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}
double g_bare_cpu = 0;  // the last bare_sendto_rate's sender CPU per datagram

// --- the ceiling: bare sendto --------------------------------------------------------

// Reads `fd` until it stays quiet once `done` is set.
void read_until_quiet(int fd, const std::atomic<bool>& done) {
  char buf[64];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r > 0) {
      while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
      }
    } else if (done.load()) {
      break;
    }
  }
}

// The bare sendto ceiling of per-item mode: one thread sends `total`
// datagrams " <i>" (as the notice) to a socket bound on 127.0.0.1 that a
// second thread reads until it stays quiet. Returns datagrams sent per
// second, timed on the sender.
double bare_sendto_rate(long total) {
  int rfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int sfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (rfd < 0 || sfd < 0) std::abort();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(rfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(rfd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    std::abort();
  std::atomic<bool> done{false};
  std::thread reader([&] { read_until_quiet(rfd, done); });
  auto t0 = Clock::now();
  double c0 = thread_cpu();
  for (long i = 0; i < total; ++i) {
    char buf[32];
    int n = std::snprintf(buf, sizeof buf, " %ld", i % 64 + 1);
    if (sendto(sfd, buf, std::size_t(n), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&a),
               sizeof a) != n)
      std::abort();
  }
  double secs = secs_since(t0);
  g_bare_cpu = (thread_cpu() - c0) / double(total);
  done.store(true);
  reader.join();
  close(rfd);
  close(sfd);
  return secs > 0 ? double(total) / secs : 0;
}

// The kernel's count of UDP datagrams dropped on a full receive buffer
// (system-wide: other processes may add to it).
double udp_rcvbuf_errors() {
  FILE* f = std::fopen("/proc/net/snmp", "r");
  if (!f) return -1;
  char names[1024], values[1024];
  double r = -1;
  while (std::fgets(names, sizeof names, f) && std::fgets(values, sizeof values, f)) {
    if (std::strncmp(names, "Udp:", 4) != 0) continue;
    std::vector<std::string> n, v;
    for (char* t = std::strtok(names, " \n"); t; t = std::strtok(nullptr, " \n")) n.push_back(t);
    for (char* t = std::strtok(values, " \n"); t; t = std::strtok(nullptr, " \n")) v.push_back(t);
    for (size_t i = 0; i < n.size() && i < v.size(); ++i)
      if (n[i] == "RcvbufErrors") r = std::atof(v[i].c_str());
    break;
  }
  std::fclose(f);
  return r;
}

// --- ours -------------------------------------------------------------------------------

const char* const UDP_LUA = R"(
  local dss_ = darksidesync
  local dispatch, queuesize, stopped = dss_.dispatch, dss_.queuesize, bench_stopped
  -- UDP coalesced mode: a datagram only when the queue goes from empty to
  -- non-empty; on each datagram the reader drains with dispatch() until
  -- queuesize() is 0.
  -- with_dss == 1: the dss helper's getsocket("coalesce") and its handler;
  -- else a plain LuaSocket socket and loop.
  function setup_coalesce(with_dss)
    if with_dss == 1 then
      local dss = require "dss"
      coalesce_skt = assert(dss.getsocket("coalesce"))
      coalesce_handler = dss.gethandler("dispatch")
      return
    end
    local socket = require "socket"
    local skt = assert(socket.udp())
    assert(skt:setsockname("127.0.0.1", 0))
    local _, port = skt:getsockname()
    dss_.setport(tonumber(port), "coalesce")
    coalesce_skt = skt
    coalesce_handler = function(s)
      s:receive(8192)
      repeat dispatch() until queuesize() == 0
    end
  end
  -- UDP, drained by a socket.select loop until every item ran or the
  -- socket stayed quiet for `quiet` seconds once the producer was done:
  -- returns items run; sets datagrams read, items left queued, seconds to
  -- the last item
  function drain_udp(target, quiet, coalesced)
    local socket = require "socket"
    local skt, handler
    if coalesced == 1 then
      skt, handler = coalesce_skt, coalesce_handler
    else
      local dss = require "dss"
      skt, handler = assert(dss.getsocket()), dss.gethandler()
    end
    local reads, t0, tlast = 0, socket.gettime(), socket.gettime()
    while n < target do
      local r = socket.select({skt}, nil, quiet)
      if not r[1] then
        if stopped() then break end
      else
        handler(skt); reads = reads + 1
        tlast = socket.gettime()
      end
    end
    last_reads, last_left, last_secs = reads, queuesize(), tlast - t0
    return n
  end
)";

struct UdpStats {
  double send_rate = 0;  // deliveries/s, timed on the producer
  double rate = 0;       // items/s, select loop
  double sent = 0;       // datagrams sent
  double failed = 0;     // send failures
  double reads = 0;      // datagrams the loop read
  double run = 0;        // items the loop ran
  double stranded = 0;   // items still queued when the socket went quiet
  double cpu = 0;        // the Lua thread's CPU seconds per item run
  double dropped = 0;    // kernel RcvbufErrors delta during the run
};

// Whether the dss helper has the coalesced mode: getsocket("coalesce")
// makes two deliveries to an empty queue send one datagram, not two.
bool dss_has_coalesce() {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, "assert(require('dss').getsocket('coalesce'))");
  deliver_ff(utilid, 1);
  deliver_ff(utilid, 2);
  bool yes = stat(L, "notified") == 1;
  lua_close(L);
  return yes;
}
bool g_dss_coalesce = false;

// The producer: `total` deliveries, `pace_us` apart; returns its seconds.
double udp_produce(void* utilid, long total, int pace_us, std::atomic<long>& failed) {
  auto t0 = Clock::now();
  for (long i = 0; i < total; ++i) {
    if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
    int rc = g_api->deliver(utilid, decode_ff, nullptr, reinterpret_cast<void*>(std::intptr_t(i)));
    if (rc == DSS_ERR_UDP_SEND_FAILED) ++failed;
    else if (rc != DSS_SUCCESS) std::abort();
  }
  double secs = secs_since(t0);
  g_stop.store(true);
  return secs;
}

// One producer delivers `total` items while Lua runs a socket.select loop.
// coalesced: setport(port, "coalesce") and a reader that drains with
// dispatch() until the queue is empty; else the dss helper, per-item mode.
// pace_us > 0: the producer sleeps that long between deliveries.
UdpStats ours_udp(long total, bool coalesced, int pace_us = 0) {
  lua_State* L;
  void* utilid = ours_state(&L);
  run(L, UDP_LUA);
  if (coalesced) call(L, "setup_coalesce", {g_dss_coalesce ? 1.0 : 0.0});
  else run(L, "require('dss').getsocket()");
  g_stop.store(false);
  std::atomic<long> failed{0};
  double drops0 = udp_rcvbuf_errors();
  double prod_secs = 0;
  std::thread prod([&] { prod_secs = udp_produce(utilid, total, pace_us, failed); });
  double quiet = opt.scale < 1 ? 0.1 : 0.3;
  double c0 = thread_cpu();
  call(L, "drain_udp", {double(total), quiet, coalesced ? 1.0 : 0.0});
  double cpu = thread_cpu() - c0;
  prod.join();
  UdpStats u;
  u.run = call(L, "count", {});
  u.cpu = u.run > 0 ? cpu / u.run : 0;
  u.reads = global_number(L, "last_reads");
  u.stranded = global_number(L, "last_left");
  double secs = global_number(L, "last_secs");
  u.rate = secs > 0 ? u.run / secs : 0;
  u.send_rate = prod_secs > 0 ? double(total) / prod_secs : 0;
  u.sent = stat(L, "notified");
  u.failed = double(failed.load());
  u.dropped = udp_rcvbuf_errors() - drops0;
  lua_close(L);
  return u;
}

UdpStats med_udp(std::vector<UdpStats> v) {
  std::sort(v.begin(), v.end(), [](const UdpStats& a, const UdpStats& b) { return a.rate < b.rate; });
  return v[v.size() / 2];
}

double worst_stranded(const std::vector<UdpStats>& v) {
  double w = 0;
  for (auto& x : v) w = std::max(w, x.stranded);
  return w;
}

// --- the rows -----------------------------------------------------------------------------

void per_item_rows(Results& res, long n_udp) {
  header("### UDP notification, per-item mode (1 producer flooding; the dss helper drains)");
  std::vector<UdpStats> us;
  std::vector<double> bare, sends, bare_cpu, cpu;
  for (int i = 0; i < 3; ++i) {  // interleaved with the bare sendto ceiling
    bare.push_back(bare_sendto_rate(n_udp));
    bare_cpu.push_back(g_bare_cpu);
    us.push_back(ours_udp(n_udp, false));
    cpu.push_back(us.back().cpu);
  }
  UdpStats u = med_udp(us);
  double bare_rate = median(bare);
  for (auto& x : us) sends.push_back(x.send_rate);
  row("U0", "ceiling: bare sendto of the notice to 127.0.0.1 (a thread reading it)",
      fmt_rate(bare_rate), "1.00×", "", "timed on the sender");
  row("U1", "items/s run by the dss helper loop", fmt_rate(u.rate), fmt_ratio(u.rate, bare_rate),
      "", "vs bare sendto (U0), target ≥ 0.8×; producer's deliver rate " +
              fmt_rate(median(sends)) + " (" + fmt_ratio(median(sends), bare_rate) +
              "); vs notification off (F1): " + fmt_ratio(u.rate, res.at(kPoll, 1)) +
              fmt("; Lua thread CPU %.2f µs per item", 1e6 * median(cpu)) +
              fmt(" (sender's %.2f µs per datagram)", 1e6 * median(bare_cpu)));
  row("U2", "datagrams sent / items delivered", fmt("%.0f", u.sent) + " / " + fmt("%.0f", double(n_udp)),
      "", "", fmt("send failures %.0f", u.failed));
  row("U3", "datagrams read by the helper / items run", fmt("%.0f", u.reads) + " / " + fmt("%.0f", u.run),
      "", "", fmt("kernel UDP RcvbufErrors during the run: %.0f", u.dropped));
  row("U4", "items stranded when the helper's socket went quiet (must be 0)",
      fmt("%.0f", u.stranded), "", "", fmt("worst of 3 runs: %.0f", worst_stranded(us)));
  UdpStats paced = ours_udp(scaled(10000), false, 50);
  row("U5", "paced producer (50 µs sleep per item): items/s / stranded",
      fmt_rate(paced.rate) + " / " + fmt("%.0f", paced.stranded), "", "",
      fmt("datagrams read %.0f, ", paced.reads) + fmt("kernel drops %.0f", paced.dropped));
  res.udp_bare = bare_rate;
  res.udp_item = u.rate;
}

void coalesced_rows(const Results& res, long n_udp) {
  g_dss_coalesce = dss_has_coalesce();
  header(g_dss_coalesce
             ? "### UDP notification, coalesced mode (1 producer flooding; the dss helper: "
               "getsocket(\"coalesce\") and gethandler(\"dispatch\"), in a select loop)"
             : "### UDP notification, coalesced mode (1 producer flooding; setport(port, "
               "\"coalesce\"), a LuaSocket select loop: one datagram read, dispatch() until "
               "queuesize() is 0)");
  std::vector<UdpStats> vc;
  for (int i = 0; i < 3; ++i) vc.push_back(ours_udp(n_udp, true));
  UdpStats c = med_udp(vc);
  row("U6", "items/s run by the select loop", fmt_rate(c.rate), fmt_ratio(c.rate, res.ceil_at(1)),
      "", "vs per-item mode (U1) " + fmt_ratio(c.rate, res.udp_item) +
              "; vs busy dispatch() (F5) " + fmt_ratio(c.rate, res.at(kDispatch, 1)));
  row("U7", "datagrams sent per item (stats: notified / items)", pct(c.sent / double(n_udp)), "",
      "", fmt("datagrams sent: %.0f, ", c.sent) + fmt("send failures %.0f", c.failed));
  row("U8", "datagrams read by the loop / items run", fmt("%.0f", c.reads) + " / " + fmt("%.0f", c.run),
      "", "", fmt("kernel UDP RcvbufErrors during the run: %.0f", c.dropped));
  row("U9", "items stranded when the socket went quiet (must be 0)", fmt("%.0f", c.stranded), "",
      "", fmt("worst of 3 runs: %.0f", worst_stranded(vc)));
  must(worst_stranded(vc) == 0,
       "U9: coalesced UDP mode stranded " + fmt("%.0f", worst_stranded(vc)) + " items");
}

}  // namespace

void udp_rows(Results& res) {
  long n_udp = scaled(100000);
  per_item_rows(res, n_udp);
  coalesced_rows(res, n_udp);
}

}  // namespace bench
