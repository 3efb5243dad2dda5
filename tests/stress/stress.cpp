// stress.cpp -- the darksidesync stress harness: what it checks, and its
// main (threads, watchdog, final accounting).
//
// Acts as a client library would: it knows darksidesync only through
// include/darksidesync_api.h and the Lua registry, and loads the module with
// `require "darksidesync"` (package.cpath points at the built .so), so that
// loading and unloading it is real.
//
// S state threads each own a Lua state in turn: create it, require
// darksidesync, register two client "libraries", drain the queue and run the
// callbacks (answering, dropping to the GC or holding waiting-thread
// callbacks), unregister and re-register mid-flight, and close it while
// producers are blocked; then open a new one. A state drains in one of five
// ways, switched at random while it runs: poll(); dispatch([max]) with or
// without an error handler (some callbacks and decoders raise); wait(timeout)
// then dispatch(); poll(2) on getfd() then dispatch(); poll(2) on a UDP
// socket that setport(port, "each" | "coalesce") notifies, then dispatch()
// until queuesize() is 0. States also change setmaxqueue(n) (small n) at run
// time. P producer threads deliver items (fire and forget or blocking, random
// decoder and Lua-side behaviour) to whatever utilid a state currently
// publishes, racing the closes, plus stale utilids: through the 1v0 deliver,
// or the 2v0 deliver2 with DSS_DELIVER_NOWAIT or not, invalid flag bits now
// and then, and timeouts from 0 to 200 ms or none (tiny ones time out while
// the item is queued, and while Lua holds its waiting-thread callback).
//
// Every item has an id and a byte of atomic flags: how many times it ended,
// how many times it was decoded, whether deliver accepted or refused it. At
// the end: accepted items must have ended exactly once (lost / doubled),
// refused ones never seen by a callback. An item ended by its producer's
// timeout ends on the producer's own thread, inside deliver2 (the harness
// checks that). A watchdog fails the run when a producer stays inside deliver
// too long (hung); deliver2 must return within its timeout (plus slack).
//
// Exact checks as it goes: dispatch() returns how many decoders ran; wait()
// returning 0 waited its timeout; the wake-up fd and the coalesced datagram
// are never missing while items are queued; the queue never grows above a
// limit it was seen under; every error raised reaches the handler or the
// caller exactly once; a blocking delivery from a decoder (the Lua thread
// inside poll or dispatch) returns DSS_ERR_WOULD_DEADLOCK.
//
// Half the states end with a quiet moment: the state unregisters its
// libraries (no producer can reach it any more), waits until no producer is
// inside a delivery of its items, and checks stats() against the harness's
// own per-state counts (delivered, decoded, returned, cancelled, timedout,
// rejected exactly; queued == blocked == 0; delivered == decoded + cancelled
// while queued + timed out while queued), that the wake-up fd is not
// readable; then delivers n items itself with DSS_DELIVER_NOWAIT into the
// empty bounded queue (exactly min(n, limit) accepted, the rest QUEUE_FULL;
// timeout 0 -> QUEUE_FULL, 1 ms -> TIMEOUT), checks queued(utilid),
// queuesize(), stats().queued, wait(0) and the fd's readability against that
// count, dispatches them (dispatch() returns the count) and checks again.
//
// Repeatedly, the run goes through moments when every state is closed (so
// Lua has dlclosed darksidesync.so): then the module must still be mapped
// (it pins itself), every producer blocked before must have been released,
// and deliveries with stale utilids, through the API struct pointer obtained
// earlier, must return DSS_ERR_INVALID_UTILID.
//
// Every registration has a record (RegRec). Its client's cancel must be
// called at most once, exactly once if nobody unregistered it before
// lua_close returned, and never if an unreg of it returned before lua_close
// was called; once lua_close returns its utilid is gone (queued() says
// INVALID_UTILID) and every producer that delivered to the state comes out
// of deliver (bounded wait: else hung).
//
// Close with a draining finalizer (--finalizer-prob): before some states are
// closed, after their last poll, the driver makes one to three objects with
// a __gc finalizer (newproxy on 5.1 and LuaJIT, a table on 5.2+), anchored
// in the registry, so lua_close runs them first (newest first, before the
// hub's closer). Each runs a plan: poll() or dispatch() (protected) until
// the queue is empty, blocking items included (the waiting-thread callback
// called, kept or dropped as the item's action says), answer held
// callbacks, or register a new client (a libid of its own) during the close,
// deliver a few items to it and publish it to the producers. Now and then
// such an object is made when the state opens instead. Every item must still
// end exactly once, every producer be released, every cancel be called as
// above (lost = doubled = hung = 0).
//
// Unreg during decode (--flood-prob): a state delivers 400 to 1600
// fire-and-forget items (more than one queue block of 340 entries) to one
// of its registrations, producers favour it meanwhile, and a helper thread
// unregisters it once the Lua thread has decoded a random part of them (at
// least 340 still queued), while the Lua thread goes on decoding and
// answering that registration's items. Decoders are slowed a little for
// such a registration, so the unreg's cancel walk overlaps the consumer.
// For every registration, in every scenario: once an unreg of it returned
// (or its state's lua_close returned), none of its decoders or return
// callbacks may run with L != NULL; each one that does counts as "late",
// and late must be 0.
//
// Sessions and channels (--session-hosts, 1 by default; alone with
// --states 0 --producers 0, as ctest's stress-sessions runs it): a host
// thread runs rounds, each a main state spawning 17 to 40 sessions on a
// pool of 1 to 3 threads, connected by channels (rendezvous, buffered,
// unbounded) that their fibers get from and forward into (choices, with
// and without timeouts), fed by C producer threads through the 2v2 API
// (blocking, timed, no-wait), while the host cancels sessions, closes
// channels and spawns late ones; then every channel closes and every
// session is joined (bounded). Every message is accounted for: received
// once per hop, ended exactly once (eaten, dropped at a closed channel,
// drained by the host), or held or taken by a cancelled session (bounded
// by its fibers); a failed put is never seen; sessions that returned
// report counts equal to their receipts. A round that fails prints its
// seed (--session-round-seed reruns that round alone). See
// scenario_sessions.cpp.
//
// The files, one scenario a file around a small shared runner:
//   runner.h                   what they all share (declarations)
//   runner.cpp                 options, failures, clocks, random numbers
//   report.cpp                 counters, the items' accounting, the summary
//   client.cpp                 API structs, registrations, records, slots,
//                              stale utilids, a state's own deliveries
//   callbacks.cpp              the client's decoder, return callback, cancel
//   lua_host.cpp               opening a Lua state, the helpers H, calls
//   driver.cpp                 the Lua driver each state runs
//   scenario_states.cpp        state threads: open, drain, churn, close
//   scenario_producers.cpp     producer threads: deliver and check results
//   scenario_quiet.cpp         a quiet moment before a close
//   scenario_all_closed.cpp    moments when every state is closed
//   scenario_finalizer.cpp     close with a draining finalizer
//   scenario_unreg_decode.cpp  unreg during decode
//   scenario_sessions.cpp      sessions and channels, exact accounting
//   sessions_lua.cpp           ... its host script and session body
//   stress.cpp                 this: main
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "runner.h"

using namespace stress;

namespace {

Clock::time_point g_t0;  // the threads' start

double elapsed() { return std::chrono::duration<double>(Clock::now() - g_t0).count(); }

// Fails the run when a thread stays inside deliver, lua_close or unreg too
// long (hung).
void watchdog() {
  std::int64_t now = now_ns();
  auto stuck = [now](std::int64_t since) {
    return since && double(now - since) / 1e9 > opt.hang_seconds;
  };
  for (int i = 0; i < opt.producers; ++i) {
    if (stuck(g_prod[std::size_t(i)].enter_ns.load())) {
      fail("producer %d inside deliver for more than %.0f s", i, opt.hang_seconds);
      st.hung++;
    }
  }
  for (int s = 0; s < opt.states; ++s) {
    if (stuck(g_close_ns[std::size_t(s)].load())) {
      fail("state %d inside lua_close for more than %.0f s", s, opt.hang_seconds);
      st.hung++;
    }
  }
  // A sessions round's own waits are bounded (hang_seconds / 3 a join):
  // twice hang_seconds is a round that cannot end.
  for (int h = 0; h < opt.session_hosts; ++h) {
    std::int64_t since = g_round_ns[std::size_t(h)].load();
    if (since && double(now - since) / 1e9 > 2 * opt.hang_seconds) {
      fail("sessions host %d in one round for more than %.0f s", h, 2 * opt.hang_seconds);
      st.hung++;
    }
  }
  if (stuck(g_unreg_enter_ns.load())) {
    fail("the unreg-during-decode thread inside unreg for more than %.0f s", opt.hang_seconds);
    st.hung++;
  }
}

// Watches the threads until they are done: stops them after opt.seconds,
// makes all-closed moments meanwhile. Exits (1) if they hang.
void supervise() {
  double next_window = 0.5;
  double stop_at = -1;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    double t = elapsed();
    if (!g_stop.load() && t >= opt.seconds) g_stop = true;
    if (g_stop.load() && stop_at < 0) stop_at = t;
    watchdog();
    bool done = g_producers_exited.load() == opt.producers &&
                g_states_exited.load() == opt.states && g_unreg_exited.load() &&
                g_hosts_exited.load() == opt.session_hosts;
    if (st.hung.load() || (stop_at >= 0 && !done && t - stop_at > 2 * opt.hang_seconds)) {
      if (!st.hung.load()) {
        fail("threads did not finish within %.0f s of the stop", 2 * opt.hang_seconds);
        st.hung++;
      }
      summary(account(), elapsed(), false);
      std::_Exit(1);  // threads are stuck: do not join them
    }
    if (done) return;
    if (!g_stop.load() && t >= next_window) {
      do_window();
      next_window = elapsed() + opt.window_every;
    }
  }
}

// The checks once every thread has finished; prints the summary and
// returns whether the run passed.
bool finish(double secs) {
  // Every state is closed now: the module must still be there.
  if (st.states_opened.load() && !module_mapped(api(), nullptr))
    fail("after the run: darksidesync.so is no longer mapped");
  Result r = account();
  if (r.refused_called) fail("%" PRIu64 " refused items had callbacks", r.refused_called);
  if (r.unfinished) fail("%" PRIu64 " items: deliver never returned", r.unfinished);
  if (r.lost) fail("%" PRIu64 " items lost", r.lost);
  if (r.doubled) fail("%" PRIu64 " items ended more than once", r.doubled);
  if (st.states_closed.load() != st.states_opened.load())
    fail("states opened %" PRIu64 ", closed %" PRIu64, st.states_opened.load(),
         st.states_closed.load());
  if (st.windows.load() == 0 && secs > 1.0)
    fail("the run never went through a moment with all states closed");
  bool passed = g_errors.load() == 0 && st.hung.load() == 0 && st.late.load() == 0;
  summary(r, secs, passed);
  return passed;
}

}  // namespace

int main(int argc, char** argv) {
  parse(argc, argv);
  std::printf("stress: seed=%" PRIu64 " items<=%" PRIu64 " seconds<=%.0f producers=%d states=%d session_hosts=%d module=%s/darksidesync.so\n",
              opt.seed, opt.items, opt.seconds, opt.producers, opt.states,
              opt.session_hosts, opt.module_dir.c_str());
  std::fflush(stdout);
  if (module_mapped(nullptr, nullptr))
    fail("darksidesync.so is mapped before any require: the harness must not load it");

  g_items.reset(new std::atomic<std::uint8_t>[opt.items + 1]());
  g_slots.reset(new Slot[std::size_t(opt.states)]);
  g_prod.reset(new ProducerInfo[std::size_t(opt.producers)]);
  g_close_ns.reset(new std::atomic<std::int64_t>[std::size_t(opt.states)]());
  g_round_ns.reset(new std::atomic<std::int64_t>[std::size_t(opt.session_hosts) + 1]());

  g_t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < opt.states; ++s) threads.emplace_back(state_thread, s);
  for (int p = 0; p < opt.producers; ++p) threads.emplace_back(producer_thread, p);
  for (int h = 0; h < opt.session_hosts; ++h) threads.emplace_back(session_host_thread, h);
  threads.emplace_back(unreg_thread);
  supervise();
  for (std::thread& th : threads) th.join();
  return finish(elapsed()) ? 0 : 1;
}
