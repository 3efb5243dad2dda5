// test_channel_fibers.cpp -- fibers of a real Lua state (the whole binding
// embedded: luaopen_darksidesync, the Lua modules from the source tree)
// blocked on darksidesync.channel ops that *other threads* complete through
// the core channel: the scheduler sleeps in darksidesync.wait and wakes
// through the state's hub (docs/sessions.md, "Channels"). Also lua_close
// with fibers blocked and completions queued, and lua_close racing a
// thread's completions: everything freed once (ASan/LSan builds), no race
// (TSan builds).
#include <catch2/catch.hpp>

#include "channel.hpp"
#include "thread_put.hpp"
#include "copy.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern "C" int luaopen_darksidesync(lua_State* L);
dss::Channel* dss_channel_of(lua_State* L, int idx);

using dss::Channel;
using dss::Message;
using dss::Suspension;
using dss::Waiter;
using Res = Channel::Res;

namespace {

// A Lua state with darksidesync (preloaded) and its Lua modules.
struct Lua {
  lua_State* L;
  Lua() : L(luaL_newstate()) {
    REQUIRE(L);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_darksidesync);
    lua_setfield(L, -2, "darksidesync");
    lua_pop(L, 1);
    lua_pushstring(L, DSS_LUA_DIR "/?.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    run("channel = require 'darksidesync.channel'\n"
        "fiber = require 'darksidesync.fibers.fiber'\n"
        "op = require 'darksidesync.fibers.op'\n"
        "sleep = require 'darksidesync.fibers.sleep'\n"
        "dss = require 'darksidesync'");
  }
  ~Lua() { close(); }
  Lua(const Lua&) = delete;
  Lua& operator=(const Lua&) = delete;
  void close() {
    if (L) lua_close(L);
    L = nullptr;
  }
  void run(const std::string& code) {
    int status = luaL_loadstring(L, code.c_str());
    if (status == LUA_OK) status = lua_pcall(L, 0, 0, 0);
    if (status != LUA_OK) FAIL(code << "\n  -> " << lua_tostring(L, -1));
  }
  bool holds(const std::string& expr) {
    run("__holds = (" + expr + ") and true or false");
    lua_getglobal(L, "__holds");
    bool b = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    return b;
  }
  // The core channel of the global `name`, with a reference of the
  // caller's own.
  Channel* chan(const char* name) {
    lua_getglobal(L, name);
    Channel* c = dss_channel_of(L, -1);
    lua_pop(L, 1);
    REQUIRE(c);
    c->ref();
    return c;
  }
  // A message holding a copy of the value of expr.
  Message msg(const std::string& expr) {
    run("__v = " + expr);
    lua_getglobal(L, "__v");
    Message m;
    REQUIRE(dss::copy_out(L, lua_gettop(L), 1, &m) == LUA_OK);
    lua_pop(L, 1);
    return m;
  }
};

// A C thread's blocking put (the core's put_from_thread, as the 2v2 API
// makes it). No assertions (threads).
Res thread_put(Channel* ch, Message m) {
  switch (dss::put_from_thread(ch, m, -1)) {
    case dss::ThreadPut::done: return Res::done;
    case dss::ThreadPut::closed: return Res::closed;
    default: return Res::nomem;
  }
}

// Runs the fibers' scheduler until fiber.stop(), for at most 30 s.
void run_main(Lua& lua) {
  lua.run("fiber.spawn(function() sleep.sleep(30); timed_out = true; fiber.stop() end)\n"
          "fiber.main()");
  REQUIRE(lua.holds("not timed_out"));
}

}  // namespace

TEST_CASE("channel fibers: a fiber blocked in get wakes through the hub when a thread puts",
          "[channel][fibers]") {
  Lua lua;
  constexpr int N = 200;
  lua.run("ch = channel.new(0)\n"
          "got = {}\n"
          "fiber.spawn(function()\n"
          "  for i = 1, " + std::to_string(N) + " do\n"
          "    got[i] = op.choice(ch:get_op(), sleep.sleep_op(20):wrap(function() return 'timeout' end)):perform()\n"
          "  end\n"
          "  fiber.stop()\n"
          "end)\n"
          "fiber.current_scheduler:run()");
  Channel* ch = lua.chan("ch");
  std::vector<Message> msgs;
  for (int i = 1; i <= N; ++i) msgs.push_back(lua.msg("{ n = " + std::to_string(i) + " }"));
  std::atomic<int> done{0};
  std::thread t([&] {
    for (Message& m : msgs)
      if (thread_put(ch, std::move(m)) == Res::done) done.fetch_add(1);
  });
  run_main(lua);
  t.join();
  CHECK(done.load() == N);
  for (int i = 1; i <= N; ++i)
    CHECK(lua.holds("type(got[" + std::to_string(i) + "]) == 'table' and got[" + std::to_string(i) +
                    "].n == " + std::to_string(i)));
  CHECK(ch->len() == 0);
  ch->unref();
}

TEST_CASE("channel fibers: two threads, a choice of two channels: each value once, in order",
          "[channel][fibers]") {
  Lua lua;
  constexpr int K = 300;
  lua.run("a, b = channel.new(0), channel.new(2)\n"
          "ga, gb = {}, {}\n"
          "fiber.spawn(function()\n"
          "  for _ = 1, " + std::to_string(2 * K) + " do\n"
          "    op.choice(a:get_op():wrap(function(v) ga[#ga + 1] = v end),\n"
          "              b:get_op():wrap(function(v) gb[#gb + 1] = v end)):perform()\n"
          "  end\n"
          "  fiber.stop()\n"
          "end)");
  Channel* a = lua.chan("a");
  Channel* b = lua.chan("b");
  std::vector<Message> ma, mb;
  for (int i = 1; i <= K; ++i) {
    ma.push_back(lua.msg(std::to_string(i)));
    mb.push_back(lua.msg(std::to_string(-i)));
  }
  std::atomic<int> done{0};
  auto producer = [&](Channel* ch, std::vector<Message>* ms) {
    for (Message& m : *ms)
      if (thread_put(ch, std::move(m)) == Res::done) done.fetch_add(1);
  };
  std::thread ta(producer, a, &ma), tb(producer, b, &mb);
  run_main(lua);
  ta.join();
  tb.join();
  CHECK(done.load() == 2 * K);
  REQUIRE(lua.holds("#ga == " + std::to_string(K) + " and #gb == " + std::to_string(K)));
  lua.run("for i = 1, #ga do assert(ga[i] == i and gb[i] == -i, i) end");
  a->unref();
  b->unref();
}

TEST_CASE("channel fibers: a thread gets what a fiber's put_op offers, in a choice with a sleep",
          "[channel][fibers]") {
  Lua lua;
  constexpr int N = 100;
  lua.run("ch = channel.new(0)\n"
          "results = {}\n"
          "fiber.spawn(function()\n"
          "  for i = 1, " + std::to_string(N) + " do\n"
          "    results[i] = op.choice(ch:put_op(i), sleep.sleep_op(20):wrap(function() return 'timeout' end)):perform()\n"
          "  end\n"
          "  fiber.stop()\n"
          "end)");
  Channel* ch = lua.chan("ch");
  std::atomic<long> sum{0};
  std::atomic<int> got{0};
  std::thread t([&] {
    while (got.load() < N) {
      Message m;
      if (ch->get_now(&m) == Res::done) {
        sum.fetch_add(long(m.size()));  // (not decoded off the Lua thread)
        got.fetch_add(1);
      } else {
        std::this_thread::yield();
      }
    }
  });
  run_main(lua);
  t.join();
  CHECK(got.load() == N);
  CHECK(lua.holds("#results == " + std::to_string(N)));
  lua.run("for i = 1, #results do assert(results[i] == true, i) end");
  ch->unref();
}

TEST_CASE("channel fibers: lua_close with fibers blocked and completions queued frees all once",
          "[channel][fibers]") {
  Lua lua;
  lua.run("a, b = channel.new(0), channel.new(0)\n"
          "for i = 1, 5 do fiber.spawn(function() a:get() end) end\n"
          "for i = 1, 5 do fiber.spawn(function()\n"
          "  op.choice(b:put_op({ i }), sleep.sleep_op(100), a:get_op()):perform()\n"
          "end) end\n"
          "fiber.current_scheduler:run()");
  Channel* a = lua.chan("a");
  Channel* b = lua.chan("b");
  a->attach();  // as if another state held them: they stay open
  b->attach();
  CHECK(b->len() == 5);
  Message m1 = lua.msg("'x'"), m2 = lua.msg("{ 'y' }");
  std::thread t([&] {
    a->put_now(m1);  // two fibers' gets complete: their items are queued
    a->put_now(m2);
    Message out;
    b->get_now(&out);  // one put_op completes
  });
  t.join();
  CHECK(lua.holds("dss.queuesize() == 3"));
  lua.close();  // the items are cancelled, the blocked fibers' arms let go
  CHECK(b->len() == 0);
  // The two gets' values never reached their fibers: back in a, not lost.
  CHECK(a->len() == 2);
  Message out, raw;
  REQUIRE(raw.append("z", 1));
  CHECK(a->get_now(&out) == Res::done);
  CHECK(a->get_now(&out) == Res::done);
  CHECK(a->get_now(&out) == Res::blocked);
  CHECK(a->put_now(raw) == Res::blocked);  // no getter left on it
  a->detach();  // the last holder: closed now
  CHECK(a->closed());
  b->detach();
  a->unref();
  b->unref();
}

TEST_CASE("channel fibers: lua_close racing a thread's completions", "[channel][fibers]") {
  for (int round = 0; round < 20; ++round) {
    Lua lua;
    lua.run("ch = channel.new(0)\n"
            "for i = 1, 50 do fiber.spawn(function()\n"
            "  op.choice(ch:get_op(), sleep.sleep_op(100)):perform()\n"
            "end) end\n"
            "fiber.current_scheduler:run()");
    Channel* ch = lua.chan("ch");
    ch->attach();  // open after the state closed
    std::atomic<bool> stop{false};
    std::atomic<int> done{0};
    std::thread t([&] {
      while (!stop.load()) {
        Message m;
        m.append("v", 1);
        if (ch->put_now(m) == Res::done) done.fetch_add(1);
      }
    });
    // Let the thread start completing, then close under it.
    for (int i = 0; i < 1000 && done.load() < round; ++i) std::this_thread::yield();
    lua.close();
    stop.store(true);
    t.join();
    CHECK(done.load() <= 50);
    Message raw;
    REQUIRE(raw.append("z", 1));
    CHECK(ch->put_now(raw) == Res::blocked);
    ch->detach();
    ch->unref();
  }
}

TEST_CASE("channel: once no Lua state can reach it, it closes and a waiting thread's put ends",
          "[channel]") {
  Lua lua;
  lua.run("ch = channel.new(0)\n"
          "inner = channel.new(1)\n"
          "carrier = channel.new(1)\n"
          "carrier:put(inner)");  // inner: a handle, and a message carrying it
  Channel* ch = lua.chan("ch");
  Channel* inner = lua.chan("inner");
  std::atomic<int> put_result{-1};
  std::thread t([&] {
    Message m;
    m.append("v", 1);
    put_result.store(int(dss::put_from_thread(ch, m, 30000)));  // waits: nobody gets
  });
  lua.run("inner = nil; collectgarbage(); collectgarbage()");
  CHECK_FALSE(inner->closed());  // the message in carrier still carries it
  lua.close();
  t.join();  // released by the close (else: timeout, after 30 s)
  CHECK(put_result.load() == int(dss::ThreadPut::closed));
  CHECK(ch->closed());
  CHECK(inner->closed());
  Message m;
  m.append("w", 1);
  CHECK(dss::put_from_thread(ch, m, 0) == dss::ThreadPut::closed);
  ch->unref();
  inner->unref();
}
