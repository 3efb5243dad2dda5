// resolver.cpp -- dss_resolver_cpp: examples/resolver (dss_resolver) ported
// to the C++ helper include/darksidesync.hpp. Same Lua API, same behaviour;
// built only against include/ (never links against darksidesync). See
// README.md here.
//
// Ownership of a request: a std::unique_ptr, so it is freed wherever its
// road ends -- dropped from the FIFO, a worker returning early, a result
// delivered (the functor posted owns it: destroyed after pushing, or unrun
// on cancellation) or refused. A request counts as pending from its
// construction to its destruction. The Lua functions of a request live in a
// table of the context's (fns[id] = {callback, retry}), Lua thread only.
//
// Lua errors are longjmps: every function Lua calls raises only from frames
// that hold no C++ object with a destructor (the C++ work is done in
// helpers that return before).
#include "darksidesync.hpp"

#include <netdb.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int MAX_POOL = 16;     // setpoolsize() accepts 1..MAX_POOL
constexpr int DEFAULT_POOL = 2;  // workers per Lua state unless told otherwise
constexpr int MAX_ATTEMPTS = 5;  // lookups per resolve() at most
const char* const CTX_MT = "dss_resolver_cpp.context";
const char ctx_key = 0;  // registry[&ctx_key] = this state's context

struct ctx;

struct request {
  request(ctx& c, lua_Integer id, bool has_retry, std::string name);
  ~request();
  ctx& c;
  lua_Integer id;         // key of its Lua functions in the fns table
  bool has_retry;         // a retry function of its own was given
  int attempts = 0;       // lookups made so far
  int gai = 0;            // 0, or the EAI_* code of the last lookup
  int sys_errno = 0;      // errno, for EAI_SYSTEM
  std::vector<std::string> addrs;  // numeric, unique, in getaddrinfo order
  std::string name;
};
using request_ptr = std::unique_ptr<request>;

enum class slot_state { none, alive, exited };

// One per Lua state that required the module; owned by a userdata (CTX_MT)
// whose __gc deletes it.
struct ctx {
  // Registered with the Lua state; its hook runs when the state closes.
  dss::client client{[this] { stop(); }};
  std::mutex mu;
  std::condition_variable cv;  // workers wait here for work
  bool stopped = false;        // shutdown or the state closing: no lookups
  int poolsize = DEFAULT_POOL;
  bool has_default_retry = false;  // setretry() set a function (mirror)
  int pending = 0;                 // requests alive
  std::deque<request_ptr> fifo;
  std::thread threads[MAX_POOL];
  slot_state slots[MAX_POOL] = {};
  int fns_ref = LUA_NOREF;  // registry ref of the fns table (Lua thread)
  lua_Integer next_id = 0;  // Lua thread

  int ensure_workers_locked();
  void worker(int index);
  void process(request_ptr r);
  void stop();
};

request::request(ctx& c_, lua_Integer id_, bool has_retry_, std::string name_)
    : c(c_), id(id_), has_retry(has_retry_), name(std::move(name_)) {
  std::lock_guard<std::mutex> lk(c.mu);
  c.pending++;
}

request::~request() {
  std::lock_guard<std::mutex> lk(c.mu);
  c.pending--;
}

// Whether name is "invalid" or under it (RFC 6761 reserves the TLD: it
// never resolves). A trailing dot (absolute form) is allowed.
bool under_invalid(const std::string& name) {
  size_t n = name.size();
  if (n > 0 && name[n - 1] == '.') n--;
  if (n < 7 || strncasecmp(name.c_str() + n - 7, "invalid", 7) != 0)
    return false;
  return n == 7 || name[n - 8] == '.';
}

// One lookup: sets r.gai (0 on success) and r.addrs.
void lookup(request& r) {
  r.addrs.clear();
  r.sys_errno = 0;
  if (under_invalid(r.name)) {
    r.gai = EAI_NONAME;  // deterministic, and no network traffic
    return;
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address, not per type
  r.gai = getaddrinfo(r.name.c_str(), nullptr, &hints, &res);
  if (r.gai != 0) {
    if (r.gai == EAI_SYSTEM) r.sys_errno = errno;
    return;
  }
  try {
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      char host[NI_MAXHOST];
      if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, nullptr,
                      0, NI_NUMERICHOST) != 0)
        continue;
      bool seen = false;
      for (const std::string& a : r.addrs) seen = seen || a == host;
      if (!seen) r.addrs.emplace_back(host);
    }
  } catch (const std::bad_alloc&) {
    r.addrs.clear();
    r.gai = EAI_MEMORY;
  }
  freeaddrinfo(res);
}

// --- Lua side of requests (Lua thread only) --------------------------------

// Pushes fns[id][field] (nil when absent); with remove, fns[id] = nil.
void push_fn(lua_State* L, ctx& c, lua_Integer id, int field, bool remove) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c.fns_ref);  // fns
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_pushinteger(L, id);
  lua_rawget(L, -2);  // fns, entry
  if (lua_istable(L, -1)) lua_rawgeti(L, -1, field);  // fns, entry, value
  else lua_pushnil(L);
  if (remove) {
    lua_pushinteger(L, id);
    lua_pushnil(L);
    lua_rawset(L, -5);
  }
  lua_replace(L, -3);  // value, entry
  lua_pop(L, 1);
}

void push_err(lua_State* L, const request& r) {
  if (r.gai == EAI_SYSTEM && r.sys_errno != 0)
    lua_pushfstring(L, "%s: %s", gai_strerror(r.gai), strerror(r.sys_errno));
  else
    lua_pushstring(L, gai_strerror(r.gai));
}

// A result: callback(name, addresses, err, attempts).
int push_result(lua_State* L, const request& r) {
  push_fn(L, r.c, r.id, 1, true);
  if (!lua_isfunction(L, -1)) return 0;  // cannot happen: fns cleared by stop
  lua_pushstring(L, r.name.c_str());
  if (r.gai == 0) {
    lua_createtable(L, static_cast<int>(r.addrs.size()), 0);
    for (size_t i = 0; i < r.addrs.size(); ++i) {
      lua_pushstring(L, r.addrs[i].c_str());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    push_err(L, r);
  }
  lua_pushinteger(L, r.attempts);
  return 5;
}

// The callback handed to Lua for a retry question, called by the poller as
// cb(wt, name, err, attempt); upvalue 1 is the retry function. Calls
// retry(name, err, attempt) and hands its truth value to wt. If retry
// raises, wt gets false (the worker does not retry) and the error is raised
// again. Returns the answer.
int ask_retry(lua_State* L) {
  lua_settop(L, 4);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  int status = lua_pcall(L, 3, 1, 0);  // wt, name, err, attempt, result
  int answer = status == 0 && lua_toboolean(L, -1);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, answer);
  lua_call(L, 1, 0);  // wt(answer): releases the worker
  if (status != 0) return lua_error(L);  // the error is on top
  lua_pushboolean(L, answer);
  return 1;
}

// A retry question: ask_retry over the retry function (the request's own,
// else the default), then name, err, attempt; 0 (no question, a "no") when
// there is none any more (setretry(nil) meanwhile).
int push_question(lua_State* L, const request& r) {
  push_fn(L, r.c, r.id, 2, false);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r.c.fns_ref);
    if (lua_istable(L, -1)) lua_getfield(L, -1, "default");
    else lua_pushnil(L);
    lua_replace(L, -2);
  }
  if (!lua_isfunction(L, -1)) return 0;
  lua_pushcclosure(L, ask_retry, 1);
  lua_pushstring(L, r.name.c_str());
  push_err(L, r);
  lua_pushinteger(L, r.attempts);
  return 4;
}

// --- workers ---------------------------------------------------------------

// Runs one request to its end: lookups, questions, the result.
void ctx::process(request_ptr r) {
  for (;;) {
    r->attempts++;
    lookup(*r);
    if (r->gai == 0 || r->attempts >= MAX_ATTEMPTS) break;
    bool stop_now, ask;
    {
      std::lock_guard<std::mutex> lk(mu);
      stop_now = stopped;
      ask = r->has_retry || has_default_retry;
    }
    if (stop_now) return;
    if (!ask) break;
    // Blocks until Lua answered, the question ended unasked or uncalled
    // (yes stays false), or it was cancelled (shut down, state closing).
    bool yes = false;
    const request& q = *r;
    int rc = client.call(
        [&q](lua_State* L) { return push_question(L, q); },
        [&yes](lua_State* L, int) { yes = lua_toboolean(L, 1); });
    if (rc < DSS_SUCCESS) return;  // no more deliveries: ends quietly
    if (!yes) break;
  }
  // Not queued (shut down, closing): the functor and r die here.
  client.post([r = std::move(r)](lua_State* L) { return push_result(L, *r); });
}

void ctx::worker(int index) {
  std::unique_lock<std::mutex> lk(mu);
  for (;;) {
    cv.wait(lk, [&] { return stopped || index >= poolsize || !fifo.empty(); });
    if (stopped || index >= poolsize) break;  // shut down, or shrunk
    request_ptr r = std::move(fifo.front());
    fifo.pop_front();
    lk.unlock();
    process(std::move(r));
    lk.lock();
  }
  slots[index] = slot_state::exited;  // joined by the next start, or stop
}

// Makes sure slots 0..poolsize-1 each have a live worker; returns how many
// do. Under mu. Workers run with the asynchronous signals blocked: those
// are for the Lua thread.
int ctx::ensure_workers_locked() {
  sigset_t all, old;
  sigfillset(&all);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT})
    sigdelset(&all, sig);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int alive = 0;
  for (int i = 0; i < poolsize; ++i) {
    if (slots[i] == slot_state::exited) {  // it only returns now
      threads[i].join();
      slots[i] = slot_state::none;
    }
    if (slots[i] == slot_state::none) {
      try {
        threads[i] = std::thread(&ctx::worker, this, i);
        slots[i] = slot_state::alive;
      } catch (...) {
      }
    }
    if (slots[i] == slot_state::alive) alive++;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return alive;
}

// Stops for good: no more lookups, the FIFO dropped, unregistered (which
// cancels our items still queued or held by Lua, releasing workers blocked
// in a question), workers joined. Idempotent; touches no Lua: runs from
// shutdown(), __gc and the client's hook (the state closing).
void ctx::stop() {
  std::deque<request_ptr> dropped;
  std::thread joined[MAX_POOL];
  {
    std::lock_guard<std::mutex> lk(mu);
    if (stopped) return;
    stopped = true;
    dropped.swap(fifo);
    for (int i = 0; i < MAX_POOL; ++i) {
      joined[i] = std::move(threads[i]);
      slots[i] = slot_state::none;
    }
    cv.notify_all();
  }
  dropped.clear();
  client.close();
  for (std::thread& t : joined)
    if (t.joinable()) t.join();
}

// --- Lua functions; each has the context userdata as upvalue 1 -------------

// The context; nullptr only when the state is closing and our __gc ran (a
// finalizer of the program may still call us then).
ctx* self(lua_State* L) {
  return *static_cast<ctx**>(lua_touserdata(L, lua_upvalueindex(1)));
}

int shut_down(lua_State* L) {
  return luaL_error(L, "dss_resolver_cpp: the resolver is shut down");
}

int typeerror(lua_State* L, int arg, const char* expected) {
  return luaL_argerror(L, arg,
                       lua_pushfstring(L, "%s expected, got %s", expected,
                                       luaL_typename(L, arg)));
}

enum class enqueued { ok, no_memory, no_thread };

// Queues a lookup and makes sure the pool runs. No Lua.
enqueued enqueue(ctx& c, const char* name, size_t len, lua_Integer id,
                 bool has_retry) noexcept {
  try {
    auto r =
        std::make_unique<request>(c, id, has_retry, std::string(name, len));
    std::lock_guard<std::mutex> lk(c.mu);  // released before r dies
    if (c.ensure_workers_locked() == 0) return enqueued::no_thread;
    c.fifo.push_back(std::move(r));
    c.cv.notify_one();
    return enqueued::ok;
  } catch (...) {
    return enqueued::no_memory;
  }
}

// resolve(name, callback[, retry])
int l_resolve(lua_State* L) {
  ctx* c = self(L);
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING) return typeerror(L, 1, "string");
  const char* name = lua_tolstring(L, 1, &len);
  if (len == 0) return luaL_argerror(L, 1, "name is empty");
  if (strlen(name) != len)
    return luaL_argerror(L, 1, "name contains a zero byte");
  if (lua_type(L, 2) != LUA_TFUNCTION) return typeerror(L, 2, "function");
  if (!lua_isnoneornil(L, 3) && lua_type(L, 3) != LUA_TFUNCTION)
    return typeerror(L, 3, "function or nil");
  if (c == nullptr || c->stopped) return shut_down(L);
  lua_settop(L, 3);
  // fns[id] = {callback, retry}: Lua allocations first, they may raise.
  lua_Integer id = ++c->next_id;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref);
  lua_pushinteger(L, id);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  if (lua_isfunction(L, 3)) {
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 2);
  }
  lua_rawset(L, -3);  // fns
  enqueued e = enqueue(*c, name, len, id, lua_isfunction(L, 3));
  if (e == enqueued::ok) return 0;
  lua_pushinteger(L, id);
  lua_pushnil(L);
  lua_rawset(L, -3);
  return luaL_error(L, e == enqueued::no_thread
                           ? "dss_resolver_cpp: cannot start a worker thread"
                           : "dss_resolver_cpp: out of memory");
}

// Sets the pool size; starts workers when lookups wait. No Lua.
void set_poolsize(ctx& c, int n) noexcept {
  std::lock_guard<std::mutex> lk(c.mu);
  c.poolsize = n;
  if (c.stopped) return;
  if (!c.fifo.empty()) c.ensure_workers_locked();  // grown: start them now
  c.cv.notify_all();                                // shrunk: extras leave
}

// setpoolsize(n), n an integer 1..MAX_POOL
int l_setpoolsize(lua_State* L) {
  ctx* c = self(L);
  if (lua_type(L, 1) != LUA_TNUMBER) return typeerror(L, 1, "number");
  lua_Number n = lua_tonumber(L, 1);
  if (!(n >= 1 && n <= MAX_POOL) ||
      n != static_cast<lua_Number>(static_cast<int>(n)))
    return luaL_argerror(L, 1, "pool size must be an integer from 1 to 16");
  if (c == nullptr) return shut_down(L);
  set_poolsize(*c, static_cast<int>(n));
  return 0;
}

// A value under c.mu. No Lua.
template <class T>
T locked(ctx& c, const T& v) noexcept {
  std::lock_guard<std::mutex> lk(c.mu);
  return v;
}

int l_getpoolsize(lua_State* L) {
  ctx* c = self(L);
  if (c == nullptr) return shut_down(L);
  lua_pushinteger(L, locked(*c, c->poolsize));
  return 1;
}

// setretry(fn | nil): the retry function of lookups that have none.
int l_setretry(lua_State* L) {
  ctx* c = self(L);
  bool set = lua_isfunction(L, 1);
  if (!set && !lua_isnoneornil(L, 1)) return typeerror(L, 1, "function or nil");
  if (c == nullptr) return shut_down(L);
  lua_settop(L, 1);
  if (c->fns_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fns_ref);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "default");
  }
  std::lock_guard<std::mutex> lk(c->mu);  // nothing below raises
  c->has_default_retry = set;
  return 0;
}

int l_pending(lua_State* L) {
  ctx* c = self(L);
  if (c == nullptr) return shut_down(L);
  lua_pushinteger(L, locked(*c, c->pending));
  return 1;
}

// Drops the fns table: every callback and retry function of the context.
void drop_fns(lua_State* L, ctx& c) {
  luaL_unref(L, LUA_REGISTRYINDEX, c.fns_ref);
  c.fns_ref = LUA_NOREF;
}

int l_shutdown(lua_State* L) {
  ctx* c = self(L);
  if (c == nullptr) return 0;
  c->stop();
  if (c->fns_ref != LUA_NOREF) drop_fns(L, *c);
  return 0;
}

int ctx_gc(lua_State* L) {
  ctx** pc = static_cast<ctx**>(luaL_checkudata(L, 1, CTX_MT));
  ctx* c = *pc;
  if (c == nullptr) return 0;
  *pc = nullptr;
  c->stop();
  if (c->fns_ref != LUA_NOREF) drop_fns(L, *c);
  delete c;
  return 0;
}

ctx* new_ctx() noexcept {
  try {
    return new ctx;
  } catch (...) {
    return nullptr;
  }
}

// Pushes this state's context userdata, creating it on first use.
void push_ctx(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&ctx_key));
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  ctx** pc = static_cast<ctx**>(lua_newuserdata(L, sizeof(ctx*)));
  *pc = nullptr;
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);  // the fns table, made before the context: may raise
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ctx* c = new_ctx();
  if (c == nullptr) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    luaL_error(L, "dss_resolver_cpp: out of memory");
    return;
  }
  c->fns_ref = ref;
  *pc = c;  // from here on __gc deletes it
  lua_pushlightuserdata(L, const_cast<char*>(&ctx_key));
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

}  // namespace

extern "C" int luaopen_dss_resolver_cpp(lua_State* L) {
  static const luaL_Reg funcs[] = {{"resolve", l_resolve},
                                   {"setpoolsize", l_setpoolsize},
                                   {"getpoolsize", l_getpoolsize},
                                   {"setretry", l_setretry},
                                   {"pending", l_pending},
                                   {"shutdown", l_shutdown},
                                   {nullptr, nullptr}};
  // The context is made before we register: darksidesync's closer, renewed
  // by the registration, is then newer, so at lua_close darksidesync closes
  // first (calling the client's hook) and our __gc, later, only frees.
  push_ctx(L);
  ctx* c = *static_cast<ctx**>(lua_touserdata(L, -1));
  if (!c->stopped) c->client.open(L);  // raises without darksidesync
  lua_newtable(L);
  for (const luaL_Reg* f = funcs; f->name; ++f) {
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  lua_pushinteger(L, MAX_ATTEMPTS);
  lua_setfield(L, -2, "maxattempts");
  return 1;
}
