// hpp_probe.cpp -- dss_hpp_probe: a test fixture, not an example. It drives
// include/darksidesync.hpp through the cases a real client meets rarely
// (throwing and raising functors, cancellation, timeouts, the deadlock
// guard, std::bad_alloc, the Lua state closing before the client dies), for
// tests/lua/test_resolver_cpp.lua.
//
//   probe.client()        -> c, an open dss::client in a userdata
//   c:post(n, kind[, v])  -> code name: n posts from a thread of its own;
//                         kind "plain", "throw", "raise", "zero", "deadlock"
//   c:post_here(kind[, v])-> code name: one post from the Lua thread
//   c:post_oom()          -> code name: a functor whose copy throws bad_alloc
//   c:call(kind[, v[, ms]]) starts a thread blocked in call(); c:join() ->
//                         code name, the answer read (nil if read did not run)
//   c:close(), c:queued(), c:utilid()
//   probe.counts()        -> functors alive, functors run, hooks called
//   probe.global_open(), probe.global_post() -> code name, probe.global_free()
//                         a client that outlives the Lua state it opened in
//
// A posted functor pushes the global function probe_cb and its arguments;
// a call pushes the global probe_q.
#include "darksidesync.hpp"

#include <atomic>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

const char* const CLIENT_MT = "dss_hpp_probe.client";

std::atomic<int> g_alive{0};    // functors alive (constructed, not destroyed)
std::atomic<int> g_ran{0};      // functors run
std::atomic<int> g_cancels{0};  // hooks called

enum kind { PLAIN, THROW, RAISE, ZERO, DEADLOCK, THROWREAD };

int kind_of(lua_State* L, int arg) {
  static const char* const names[] = {"plain",    "throw",     "raise", "zero",
                                      "deadlock", "throwread", nullptr};
  return luaL_checkoption(L, arg, nullptr, names);
}

struct functor {
  dss::client* cl;
  int k;
  lua_Integer v;
  functor(dss::client* c, int kd, lua_Integer val) : cl(c), k(kd), v(val) {
    g_alive++;
  }
  functor(const functor& o) : cl(o.cl), k(o.k), v(o.v) { g_alive++; }
  ~functor() { g_alive--; }
  int operator()(lua_State* L) {
    g_ran++;
    if (k == THROW) throw std::runtime_error("thrown by a functor");
    if (k == RAISE) return luaL_error(L, "raised by a functor %d", int(v));
    if (k == ZERO) return 0;
    lua_getglobal(L, "probe_cb");
    lua_pushinteger(L, v);
    if (k != DEADLOCK) return 2;
    // On the Lua thread, inside the decoder: a blocking call must refuse.
    int rc = cl->call([](lua_State*) { return 0; }, [](lua_State*, int) {});
    lua_pushstring(L, dss::code_name(rc));
    return 3;
  }
};

// A functor whose copy throws std::bad_alloc.
struct no_copy {
  no_copy() = default;
  no_copy(const no_copy&) { throw std::bad_alloc(); }
  int operator()(lua_State*) { return 0; }
};

struct pclient {
  dss::client c{[] { g_cancels++; }};
  std::thread th;
  std::atomic<int> rc{0};
  bool answered = false;
  lua_Integer answer = 0;
};

pclient* check(lua_State* L) {
  return static_cast<pclient*>(luaL_checkudata(L, 1, CLIENT_MT));
}

int l_gc(lua_State* L) {
  pclient* p = check(L);
  p->c.close();  // releases a thread blocked in call()
  if (p->th.joinable()) p->th.join();
  p->~pclient();
  return 0;
}

pclient* new_pclient(void* mem) noexcept {
  try {
    return new (mem) pclient;
  } catch (...) {
    return nullptr;
  }
}

int l_client(lua_State* L) {
  void* mem = lua_newuserdata(L, sizeof(pclient));
  pclient* p = new_pclient(mem);
  if (p == nullptr) return luaL_error(L, "dss_hpp_probe: out of memory");
  luaL_getmetatable(L, CLIENT_MT);
  lua_setmetatable(L, -2);
  p->c.open(L);
  return 1;
}

// n posts from a new thread (joined); the last code.
int post_thread(pclient* p, int n, int k, lua_Integer v) noexcept {
  int rc = DSS_SUCCESS;
  try {
    std::thread t([&] {
      for (int i = 0; i < n; ++i) rc = p->c.post(functor(&p->c, k, v + i));
    });
    t.join();
  } catch (...) {
    return DSS_ERR_OUT_OF_MEMORY;
  }
  return rc;
}

int l_post(lua_State* L) {
  pclient* p = check(L);
  int n = static_cast<int>(luaL_checkinteger(L, 2));
  int k = kind_of(L, 3);
  lua_Integer v = luaL_optinteger(L, 4, 0);
  lua_pushstring(L, dss::code_name(post_thread(p, n, k, v)));
  return 1;
}

int post_here(pclient* p, int k, lua_Integer v) noexcept {
  try {
    return p->c.post(functor(&p->c, k, v));
  } catch (...) {
    return DSS_ERR_OUT_OF_MEMORY;
  }
}

int l_post_here(lua_State* L) {
  pclient* p = check(L);
  int k = kind_of(L, 2);
  lua_Integer v = luaL_optinteger(L, 3, 0);
  lua_pushstring(L, dss::code_name(post_here(p, k, v)));
  return 1;
}

int post_oom(pclient* p) noexcept {
  try {
    no_copy f;
    return p->c.post(f);  // an lvalue: copied, and the copy throws
  } catch (...) {
    return DSS_ERR_INVALID_ARGUMENT;  // the exception escaped post
  }
}

int l_post_oom(lua_State* L) {
  lua_pushstring(L, dss::code_name(post_oom(check(L))));
  return 1;
}

// The call() thread: push probe_q(wt, v); read the integer Lua answers.
void call_thread(pclient* p, int k, lua_Integer v, long ms) {
  int rc = p->c.call(
      [&](lua_State* L) {
        if (k == THROW) throw std::runtime_error("thrown by push");
        if (k == ZERO) return 0;
        lua_getglobal(L, "probe_q");
        lua_pushinteger(L, v);
        return 2;
      },
      [&](lua_State* L, int nargs) {
        if (k == THROWREAD) throw std::runtime_error("thrown by read");
        p->answered = true;
        p->answer = nargs > 0 ? lua_tointeger(L, 1) : -1;
        lua_pushstring(L, "read");
        return 1;
      },
      ms);
  p->rc = rc;
}

int start_call(pclient* p, int k, lua_Integer v, long ms) noexcept {
  try {
    p->answered = false;
    p->th = std::thread(call_thread, p, k, v, ms);
    return 1;
  } catch (...) {
    return 0;
  }
}

// c:call(kind[, v[, ms]]): "plain", "throw" (push throws), "throwread"
// (read throws), "zero" (push returns 0).
int l_call(lua_State* L) {
  pclient* p = check(L);
  int k = kind_of(L, 2);
  lua_Integer v = luaL_optinteger(L, 3, 0);
  long ms = static_cast<long>(luaL_optinteger(L, 4, DSS_TIMEOUT_INFINITE));
  if (p->th.joinable()) return luaL_error(L, "dss_hpp_probe: call running");
  if (!start_call(p, k, v, ms))
    return luaL_error(L, "dss_hpp_probe: no thread");
  return 0;
}

int l_join(lua_State* L) {
  pclient* p = check(L);
  if (p->th.joinable()) p->th.join();
  lua_pushstring(L, dss::code_name(p->rc));
  if (p->answered) lua_pushinteger(L, p->answer);
  else lua_pushnil(L);
  return 2;
}

int l_close(lua_State* L) {
  check(L)->c.close();
  return 0;
}

int l_queued(lua_State* L) {
  lua_pushinteger(L, check(L)->c.queued());
  return 1;
}

int l_utilid(lua_State* L) {
  void* u = check(L)->c.utilid();
  if (u) lua_pushlightuserdata(L, u);
  else lua_pushnil(L);
  return 1;
}

int l_counts(lua_State* L) {
  lua_pushinteger(L, g_alive);
  lua_pushinteger(L, g_ran);
  lua_pushinteger(L, g_cancels);
  return 3;
}

// A client that outlives its Lua state.
dss::client* g_client = nullptr;

dss::client* new_client() noexcept {
  try {
    return new dss::client([] { g_cancels++; });
  } catch (...) {
    return nullptr;
  }
}

int l_global_open(lua_State* L) {
  if (g_client == nullptr) g_client = new_client();
  if (g_client == nullptr) return luaL_error(L, "dss_hpp_probe: no memory");
  g_client->open(L);
  return 0;
}

int global_post() noexcept {
  int rc = DSS_SUCCESS;
  try {
    std::thread t([&] { rc = g_client->post(functor(g_client, PLAIN, 0)); });
    t.join();
  } catch (...) {
    return DSS_ERR_OUT_OF_MEMORY;
  }
  return rc;
}

int l_global_post(lua_State* L) {
  if (g_client == nullptr) return luaL_error(L, "dss_hpp_probe: no client");
  lua_pushstring(L, dss::code_name(global_post()));
  return 1;
}

int l_global_free(lua_State*) {
  delete g_client;
  g_client = nullptr;
  return 0;
}

}  // namespace

extern "C" int luaopen_dss_hpp_probe(lua_State* L) {
  static const luaL_Reg methods[] = {
      {"post", l_post},   {"post_here", l_post_here}, {"post_oom", l_post_oom},
      {"call", l_call},   {"join", l_join},           {"close", l_close},
      {"queued", l_queued}, {"utilid", l_utilid},     {"__gc", l_gc},
      {nullptr, nullptr}};
  static const luaL_Reg funcs[] = {{"client", l_client},
                                   {"counts", l_counts},
                                   {"global_open", l_global_open},
                                   {"global_post", l_global_post},
                                   {"global_free", l_global_free},
                                   {nullptr, nullptr}};
  if (luaL_newmetatable(L, CLIENT_MT)) {
    for (const luaL_Reg* m = methods; m->name; ++m) {
      lua_pushcfunction(L, m->func);
      lua_setfield(L, -2, m->name);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  for (const luaL_Reg* f = funcs; f->name; ++f) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  return 1;
}
