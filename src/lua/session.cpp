// session.cpp -- sessions (docs/sessions.md): a Lua state of its own per
// session, running one function among fibers on the thread pool of the
// main state that spawned it.
//
// A session is a dss::Runnable. Its first run makes the state (standard
// libraries, the spawner's package.path and cpath, darksidesync), then
// resumes the boot coroutine (darksidesync.session's _boot, Lua), which
// runs the function in a fiber under the fibers scheduler. When the
// scheduler has nothing to run, instead of sleeping it yields (timeout,
// fd) to the run here, which parks the session: it holds no thread until
// the reactor (the timeout, the fd of its poller) or its hub's wake hook
// (an item, a channel completion) wakes it. When the boot returns, the
// results are copied out, the state closed, and the joiners woken.
//
// Ownership: a Session is refcounted -- each Lua handle, the pool from
// start() to finished(), and the hub's wake hook from set until the hub
// is recycled (a delivery in flight may still call the hook after the
// state closed). The Sessions of a main state (pool, reactor, the list of
// live sessions) are held by the main state and by every session.
#include "session.hpp"

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>

#include "../core/hub.hpp"
#include "binding.hpp"
#include "channel.hpp"
#include "clock.hpp"
#include "copy.hpp"
#include "message.hpp"
#include "pool.hpp"
#include "reactor.hpp"

namespace {

using dss::Channel;
using dss::Clock;
using dss::Message;
using dss::Pool;
using dss::Runnable;

const char* const kMeta = "darksidesync.session";
const char* const kOwnerMeta = "darksidesync.sessions";
const char* const kClosedMsg = "darksidesync.session: the pool is closed";

// Registry keys: in a session's state, the Session and its Sessions (light
// userdata) and the boot coroutine; in a main state, the box that owns its
// Sessions.
char self_key, pool_key, co_key, owner_key;

class Session;

// The sessions of one main state.
class Sessions {
 public:
  static Sessions* create();  // refs 1; nullptr when out of memory
  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  bool add(Session* s);  // false once closed
  void remove(Session* s);
  // Cancels every session, lets them end, joins the threads. False on one
  // of the pool's own threads (it would wait for itself).
  bool close();
  bool closed();
  std::size_t live();

  Pool pool;
  dss::Reactor reactor;

 private:
  Sessions();
  std::mutex mu_;
  Session* head_ = nullptr;  // live sessions (intrusive list)
  std::size_t n_ = 0;
  bool closed_ = false;
  std::atomic<int> refs_{1};
};

class Session final : public Runnable {
 public:
  enum class Status { running, done, error, cancelled };

  static Session* create(Sessions* owner);  // refs 1; nullptr: no memory
  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // What the first run unpacks: package.path and package.cpath (paths),
  // then the function (or source text) and its arguments (body), decoded
  // once darksidesync is loaded (a channel handle needs its metatable).
  // Written before start().
  Message paths, body;

  // Queues the first run (taking the pool's reference). False when the
  // pool is closed.
  bool start();
  // Asks it to end (cooperative: its scheduler stops at its next switch).
  void cancel();
  bool cancelled() const { return cancel_.load(std::memory_order_acquire); }
  // Waits until it ended, or the deadline; true when it ended.
  bool wait_end(bool timed, Clock::time_point deadline);
  Status status();
  // Its results (done), or its error message (error). Read once ended.
  const Message& result() const { return result_; }
  Channel* done() const { return done_; }  // closed when it ends
  Sessions* owner() const { return owner_; }

  // Join bookkeeping, on the handle's side (one Lua thread per handle).
  bool joined = false;

  Runnable::After run() override;
  void finished() override { unref(); }

  // The intrusive list of Sessions, under its lock.
  Session* prev = nullptr;
  Session* next = nullptr;

 private:
  explicit Session(Sessions* owner) : owner_(owner) {}
  ~Session() override;
  bool setup();
  void park(int nres);
  void collect(int status, int nres);
  void fail(lua_State* from);
  Runnable::After finish(Status st);
  static int setup_tramp(lua_State* L);
  static void hook(void* ctx);
  static void hook_release(void* ctx);

  Sessions* owner_;
  dss::Reactor::Entry rentry_{this};
  Channel* done_ = nullptr;
  lua_State* L_ = nullptr;
  lua_State* co_ = nullptr;
  int nargs_ = 0;  // the first resume's
  bool first_ = true;
  Status end_ = Status::running;  // what the run decided (run's thread)
  Message result_;
  std::atomic<bool> cancel_{false};
  std::atomic<int> refs_{1};
  std::mutex mu_;
  std::condition_variable cv_;
  Status st_ = Status::running;  // published, under mu_
};

// --- Sessions -----------------------------------------------------------------

unsigned default_max() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? n : 2;
}

Sessions::Sessions() : pool(1, default_max()), reactor(&pool) {}

Sessions* Sessions::create() { return new (std::nothrow) Sessions(); }

bool Sessions::add(Session* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return false;
  s->prev = nullptr;
  s->next = head_;
  if (head_) head_->prev = s;
  head_ = s;
  ++n_;
  return true;
}

void Sessions::remove(Session* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (s->prev) s->prev->next = s->next;
  else if (head_ == s) head_ = s->next;
  else return;  // not on the list
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
  --n_;
}

bool Sessions::closed() {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

std::size_t Sessions::live() {
  std::lock_guard<std::mutex> lock(mu_);
  return n_;
}

bool Sessions::close() {
  if (Pool::current() == &pool) return false;
  for (;;) {
    // Cancel them a few at a time, each held by a reference while the
    // lock is let go (cancel wakes it: the pool's lock).
    Session* batch[64];
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      for (Session* s = head_; s && n < 64; s = s->next)
        if (!s->cancelled()) {
          s->ref();
          batch[n++] = s;
        }
    }
    if (n == 0) break;
    for (int i = 0; i < n; ++i) {
      batch[i]->cancel();
      batch[i]->unref();
    }
  }
  pool.close();  // runs them to their end, joins the threads
  return true;
}

// --- Session ------------------------------------------------------------------

Session* Session::create(Sessions* owner) {
  Session* s = new (std::nothrow) Session(owner);
  if (!s) return nullptr;
  owner->ref();  // the session's, dropped by its destructor
  s->done_ = Channel::create(0);
  if (!s->done_) {
    delete s;
    return nullptr;
  }
  s->done_->attach();  // join_op's handles come and go; the session stays
  return s;
}

Session::~Session() {
  if (done_) {
    done_->detach();
    done_->unref();
  }
  owner_->unref();
}

bool Session::start() {
  ref();  // the pool's, until finished()
  if (!owner_->add(this)) {
    unref();
    return false;
  }
  if (!owner_->pool.wake(this)) {  // closing meanwhile
    owner_->remove(this);
    unref();
    return false;
  }
  return true;
}

void Session::cancel() {
  cancel_.store(true, std::memory_order_release);
  owner_->pool.wake(this);
}

Session::Status Session::status() {
  std::lock_guard<std::mutex> lock(mu_);
  return st_;
}

bool Session::wait_end(bool timed, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ended = [this] { return st_ != Status::running; };
  if (!timed) {
    cv_.wait(lock, ended);
    return true;
  }
  return cv_.wait_until(lock, deadline, ended);
}

void Session::hook(void* ctx) {
  Session* s = static_cast<Session*>(ctx);
  s->owner_->pool.wake(s);
}

void Session::hook_release(void* ctx) { static_cast<Session*>(ctx)->unref(); }

// --- our own Lua modules, compiled once per process ----------------------------
//
// A session's boot requires darksidesync.session, .channel and the fibers
// modules, and its first channel op fibers/op.lua: parsing them was ~3/4 of
// a spawn's instructions (docs/performance.md, "Sessions and channels"). The
// first session that needs one of them parses it and keeps its dump (with
// debug information: tracebacks are unchanged); every later session loads
// the dump, several times cheaper than a parse. Only darksidesync.* modules
// found on the session's package.path are cached, keyed by the file's path,
// and never dropped: a file changed while the process runs is not re-read.

struct ChunkCache {
  std::mutex mu;
  std::unordered_map<std::string, std::string> dumps;  // path -> lua_dump
};

ChunkCache& chunk_cache() {
  static ChunkCache* c = new ChunkCache;  // never destroyed: pool threads may outlive exit
  return *c;
}

int chunk_writer(lua_State*, const void* p, size_t sz, void* ud) {
  try {
    static_cast<std::string*>(ud)->append(static_cast<const char*>(p), sz);
  } catch (...) {
    return 1;  // no memory: the chunk is simply not cached
  }
  return 0;
}

// The first file of `name` on `path` (';'-separated templates, '?' the name
// with '.' -> '/') that opens; empty when none does.
std::string search_path(const char* name, const char* path) {
  std::string mod(name);
  for (char& c : mod)
    if (c == '.') c = '/';
  std::string p(path);
  for (size_t i = 0; i <= p.size();) {
    size_t j = p.find(';', i);
    if (j == std::string::npos) j = p.size();
    std::string f = p.substr(i, j - i);
    i = j + 1;
    if (f.empty()) continue;
    for (size_t q; (q = f.find('?')) != std::string::npos;) f.replace(q, 1, mod);
    if (std::FILE* fp = std::fopen(f.c_str(), "r")) {
      std::fclose(fp);
      return f;
    }
  }
  return {};
}

// What load_tramp loads: the cached dump of `file` (dump), or the file
// itself, whose dump it then leaves in *fresh (dumped) for the cache.
struct LoadJob {
  const char* name;
  const char* file;
  const char* chunkname;
  const std::string* dump;
  std::string* fresh;
  bool dumped;
};

// Protected (dss_pcallv), so that no Lua error passes over load_cached's
// strings: pushes the chunk and the file's name, or raises the searcher's
// error message.
int load_tramp(lua_State* L) {
  LoadJob* j = static_cast<LoadJob*>(lua_touserdata(L, 1));
  int st = j->dump ? dss_loadbinary(L, j->dump->data(), j->dump->size(), j->chunkname)
                   : luaL_loadfile(L, j->file);
  if (st != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", j->name, j->file,
                      lua_tostring(L, -1));
  if (!j->dump) j->dumped = dss_dump(L, chunk_writer, j->fresh) == 0;
  lua_pushstring(L, j->file);
  return 2;
}

// Pushes module `name`'s chunk and its file name (2), or the load error
// (1); 0 when it is not on `path`. Every Lua call is protected, so no
// longjmp skips the strings here; only std::bad_alloc (from them), which
// the caller turns into a Lua error.
int load_cached(lua_State* L, const char* name, const char* path) {
  std::string file = search_path(name, path);
  if (file.empty()) return 0;
  ChunkCache& c = chunk_cache();
  const std::string* dump = nullptr;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.dumps.find(file);
    if (it != c.dumps.end()) dump = &it->second;  // never erased: stable
  }
  std::string chunkname = "@" + file;
  std::string fresh;
  LoadJob j = {name, file.c_str(), chunkname.c_str(), dump, &fresh, false};
  if (dss_pcallv(L, load_tramp, &j, 0, 0, LUA_MULTRET) != LUA_OK) return 1;
  if (j.dumped) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.dumps.emplace(file, std::move(fresh));
  }
  return 2;
}

// package.searchers[2] (5.1: loaders) in a session: darksidesync.* Lua
// modules through the cache; anything else falls through to the standard
// searchers.
int cached_searcher(lua_State* L) {
  const char* name = luaL_checkstring(L, 1);
  if (std::strncmp(name, "darksidesync.", 13) != 0) return 0;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  const char* path = lua_tostring(L, -1);
  if (!path) return 0;
  int n;
  try {
    n = load_cached(L, name, path);
  } catch (const std::bad_alloc&) {  // the path strings: no exception may cross Lua
    n = -1;
  }
  if (n < 0) return luaL_error(L, "darksidesync.session: not enough memory");
  if (n == 1) return lua_error(L);  // load_tramp's message
  return n;
}

// Puts cached_searcher second in package.searchers (package on top).
void add_searcher(lua_State* L) {
#if LUA_VERSION_NUM >= 502
  lua_getfield(L, -1, "searchers");
#else
  lua_getfield(L, -1, "loaders");
#endif
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  for (int i = int(dss_rawlen(L, -1)); i >= 2; --i) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, cached_searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 1);
}

// Runs in the new state, protected: everything that may raise.
int Session::setup_tramp(lua_State* L) {
  Session* s = static_cast<Session*>(lua_touserdata(L, 1));
  luaL_openlibs(L);
  lua_pushlightuserdata(L, s);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &self_key);
  lua_pushlightuserdata(L, s->owner_);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &pool_key);
  int n = 0;  // path, cpath
  if (dss::copy_in(L, s->paths, &n) != LUA_OK) return lua_error(L);
  luaL_checkstack(L, 8, "darksidesync.session");
  lua_getglobal(L, "package");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "path");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "cpath");
  add_searcher(L);
  lua_settop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "darksidesync");
  lua_call(L, 1, 0);
  dss::Hub* hub = dss_hub_of(L);
  if (!hub) return luaL_error(L, "darksidesync.session: darksidesync did not start");
  s->ref();  // the hook's, until the hub is recycled
  hub->set_wake_hook(&Session::hook, s, &Session::hook_release);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "darksidesync.session");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "_boot");
  lua_replace(L, -2);  // at 2
  if (dss::copy_in(L, s->body, &n) != LUA_OK) return lua_error(L);  // 3..
  lua_State* co = lua_newthread(L);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &co_key);  // anchored
  lua_xmove(L, co, n + 1);  // _boot, the function, its arguments
  s->co_ = co;
  s->nargs_ = n;
  return 0;
}

// The first run: the state. False (end_ and result_ set) when it failed.
bool Session::setup() {
  L_ = luaL_newstate();
  if (!L_) {
    end_ = Status::error;  // no message: join says "not enough memory"
    return false;
  }
  int st = dss_pcallv(L_, setup_tramp, this, 1, 0, 0);
  paths.clear();
  body.clear();
  if (st != LUA_OK) {
    fail(L_);
    return false;
  }
  return true;
}

// The error on top of `from`'s stack becomes the result (a string).
void Session::fail(lua_State* from) {
  end_ = Status::error;
  if (!lua_checkstack(from, 4)) return;
  if (!lua_isstring(from, -1)) {
    lua_pushfstring(from, "(error object is a %s value)", luaL_typename(from, -1));
  }
  Message m;
  if (dss::copy_out(from, lua_gettop(from), 1, &m) == LUA_OK) result_ = std::move(m);
}

// Parks: the reactor wakes it at the timeout or when the fd is readable
// (the yielded values: timeout in seconds or nil, fd or nil).
void Session::park(int nres) {
  double t = -1;
  int fd = -1;
  if (nres >= 1 && lua_type(co_, -nres) == LUA_TNUMBER) t = lua_tonumber(co_, -nres);
  if (nres >= 2 && lua_type(co_, -nres + 1) == LUA_TNUMBER)
    fd = int(lua_tonumber(co_, -nres + 1));
  lua_settop(co_, 0);
  Clock::time_point deadline = Clock::time_point::max();
  if (t >= 0 && t < 1e9)
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(t));
  if (deadline == Clock::time_point::max() && fd < 0) return;  // the hub's hook wakes it
  // The reactor could not take it (out of memory, no thread, a bad fd):
  // run again at once rather than sleep forever; its fibers poll.
  if (owner_->reactor.arm(&rentry_, deadline, fd) != 0) owner_->pool.wake(this);
}

// The boot returned (true, results...), (false, message) or (nil,
// "cancelled"); or it raised.
void Session::collect(int status, int nres) {
  if (status != LUA_OK) {
    fail(co_);
    return;
  }
  int tag = lua_gettop(co_) - nres + 1;
  if (nres >= 1 && lua_toboolean(co_, tag)) {
    Message m;
    if (!lua_checkstack(co_, 4)) {
      end_ = Status::error;
    } else if (dss::copy_out(co_, tag + 1, nres - 1, &m) == LUA_OK) {
      result_ = std::move(m);
      end_ = Status::done;
    } else {
      lua_pushfstring(co_, "darksidesync.session: cannot return the results: %s",
                      lua_tostring(co_, -1));
      fail(co_);
    }
  } else if (nres >= 1 && lua_isnil(co_, tag)) {
    end_ = Status::cancelled;
  } else {
    if (nres >= 2) lua_pushvalue(co_, tag + 1);
    else lua_pushliteral(co_, "darksidesync.session: the session ended without a result");
    fail(co_);
  }
}

Runnable::After Session::finish(Status st) {
  owner_->reactor.disarm(&rentry_);
  if (L_) {
    lua_close(L_);
    L_ = co_ = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    st_ = st;
  }
  cv_.notify_all();
  done_->close();
  owner_->remove(this);
  return Runnable::After::done;
}

Runnable::After Session::run() {
  if (first_) {
    if (cancelled()) return finish(Status::cancelled);
    if (!setup()) return finish(end_);
  }
  int nargs;
  if (first_) {
    first_ = false;
    nargs = nargs_;
  } else {
    lua_pushboolean(co_, cancelled());
    nargs = 1;
  }
  int nres = 0;
  int st = dss_resume(co_, L_, nargs, &nres);
  if (st == LUA_YIELD) {
    park(nres);
    return Runnable::After::park;
  }
  collect(st, nres);
  return finish(end_);
}

// --- the Lua side ---------------------------------------------------------------

struct SessUd {
  Session* s;  // null once collected
};

Session* check_session(lua_State* L) {
  SessUd* u = static_cast<SessUd*>(luaL_checkudata(L, 1, kMeta));
  if (!u->s) luaL_argerror(L, 1, "darksidesync.session: a collected session");
  return u->s;
}

// A main state's hold on its Sessions.
struct OwnerBox {
  Sessions* sp;
};

int owner_gc(lua_State* L) {
  OwnerBox* b = static_cast<OwnerBox*>(lua_touserdata(L, 1));
  Sessions* sp = b->sp;
  b->sp = nullptr;
  if (sp) {
    sp->close();
    sp->unref();
  }
  return 0;
}

// The Sessions this state spawns into: its own session's, or (a main
// state) its own, made on first use. Raises when out of memory.
Sessions* sessions_of(lua_State* L) {
  luaL_checkstack(L, 3, "darksidesync.session");
  dss_rawgetp(L, LUA_REGISTRYINDEX, &pool_key);
  void* p = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (p) return static_cast<Sessions*>(p);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &owner_key);
  OwnerBox* b = static_cast<OwnerBox*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (b && b->sp) return b->sp;
  if (!b) {
    b = static_cast<OwnerBox*>(lua_newuserdata(L, sizeof(OwnerBox)));
    b->sp = nullptr;
    if (luaL_newmetatable(L, kOwnerMeta)) {
      lua_pushcfunction(L, owner_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    dss_rawsetp(L, LUA_REGISTRYINDEX, &owner_key);
  }
  b->sp = Sessions::create();
  if (!b->sp) luaL_error(L, "darksidesync.session: not enough memory");
  return b->sp;
}

// Pushes package.path and package.cpath (nil when missing).
void push_paths(lua_State* L) {
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  lua_remove(L, -3);
}

// spawn(fn_or_source, ...) -> session
int l_spawn(lua_State* L) {
  int n = lua_gettop(L);
  int t = lua_type(L, 1);
  if (t != LUA_TFUNCTION && t != LUA_TSTRING)
    return luaL_argerror(L, 1, "function or source text expected");
  Sessions* sp = sessions_of(L);
  if (sp->closed()) return luaL_error(L, "%s", kClosedMsg);
  luaL_checkstack(L, 6, "darksidesync.session");
  push_paths(L);  // n+1, n+2
  SessUd* u = static_cast<SessUd*>(lua_newuserdata(L, sizeof(SessUd)));
  u->s = nullptr;
  luaL_getmetatable(L, kMeta);
  lua_setmetatable(L, -2);
  Session* s = Session::create(sp);
  if (!s) return luaL_error(L, "darksidesync.session: not enough memory");
  u->s = s;  // from here the handle owns it
  if (dss::copy_out(L, n + 1, 2, &s->paths) != LUA_OK) return lua_error(L);
  if (dss::copy_out(L, 1, n, &s->body) != LUA_OK) return lua_error(L);
  if (!s->start()) return luaL_error(L, "%s", kClosedMsg);
  return 1;
}

// Seconds (nil: no limit) -> a deadline; false for none.
bool deadline_arg(lua_State* L, int idx, Clock::time_point* out) {
  if (lua_isnoneornil(L, idx)) return false;
  lua_Number t = luaL_checknumber(L, idx);
  if (!(t >= 0)) luaL_argerror(L, idx, "non-negative number of seconds expected");
  if (t >= 1e9) return false;
  *out = Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t));
  return true;
}

// s:join([timeout]) -> results... | nil, error | nil, "cancelled" |
// nil, "timeout"
int l_join(lua_State* L) {
  Session* s = check_session(L);
  Clock::time_point deadline;
  bool timed = deadline_arg(L, 2, &deadline);
  if (s->joined) return luaL_error(L, "darksidesync.session: already joined");
  if (!s->wait_end(timed, deadline)) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  s->joined = true;
  Session::Status st = s->status();
  if (st == Session::Status::cancelled) {
    lua_pushnil(L);
    lua_pushliteral(L, "cancelled");
    return 2;
  }
  int first = lua_gettop(L) + 1;
  if (st == Session::Status::error) lua_pushnil(L);
  int n = 0;
  if (dss::copy_in(L, s->result(), &n) != LUA_OK) return lua_error(L);
  if (st == Session::Status::error && n == 0) lua_pushliteral(L, "not enough memory");
  return lua_gettop(L) - first + 1;
}

// s:cancel(): asks it to end; its scheduler stops at its next switch.
int l_cancel(lua_State* L) {
  check_session(L)->cancel();
  return 0;
}

// s:status() -> "running" | "done" | "error" | "cancelled"
int l_status(lua_State* L) {
  static const char* const names[] = {"running", "done", "error", "cancelled"};
  lua_pushstring(L, names[int(check_session(L)->status())]);
  return 1;
}

// s:_done() -> a channel closed when the session ends (for fibers that
// join: darksidesync.session waits on it)
int l_done(lua_State* L) {
  dss_push_channel(L, check_session(L)->done());
  return 1;
}

int l_gc(lua_State* L) {
  SessUd* u = static_cast<SessUd*>(lua_touserdata(L, 1));
  Session* s = u->s;
  u->s = nullptr;
  if (s) s->unref();
  return 0;
}

int l_tostring(lua_State* L) {
  Session* s = check_session(L);
  lua_pushfstring(L, "darksidesync.session: %p", static_cast<void*>(s));
  return 1;
}

// pool([{min=, max=, idle=}]) -> {min, max, threads, busy, peak, queued,
// sessions}
int l_pool(lua_State* L) {
  Sessions* sp = sessions_of(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    unsigned mn, mx;
    sp->pool.limits(&mn, &mx);
    lua_getfield(L, 1, "min");
    lua_getfield(L, 1, "max");
    lua_getfield(L, 1, "idle");
    if (!lua_isnil(L, -3)) mn = unsigned(luaL_checkinteger(L, -3));
    if (!lua_isnil(L, -2)) mx = unsigned(luaL_checkinteger(L, -2));
    if (!lua_isnil(L, -1))
      sp->pool.set_idle_retire(std::chrono::milliseconds(long(luaL_checknumber(L, -1) * 1000)));
    lua_pop(L, 3);
    if (sp->closed()) return luaL_error(L, "%s", kClosedMsg);
    sp->pool.set_limits(mn, mx);
  }
  unsigned mn, mx;
  sp->pool.limits(&mn, &mx);
  Pool::Counts c = sp->pool.counts();
  lua_createtable(L, 0, 7);
  const struct {
    const char* k;
    lua_Integer v;
  } rows[] = {{"min", mn},          {"max", mx},        {"threads", c.threads},
              {"busy", c.busy},     {"peak", c.peak},   {"queued", lua_Integer(c.queued)},
              {"sessions", lua_Integer(sp->live())}};
  for (const auto& r : rows) {
    lua_pushinteger(L, r.v);
    lua_setfield(L, -2, r.k);
  }
  return 1;
}

// close(): cancels every session, waits for them to end, joins the pool's
// threads; spawn raises from then on. Not from inside a session.
int l_close(lua_State* L) {
  Sessions* sp = sessions_of(L);
  if (!sp->close())
    return luaL_error(L, "darksidesync.session: cannot close the pool from one of its sessions");
  return 0;
}

// _cancelled() -> whether this state's session was cancelled (false
// outside a session)
int l_cancelled(lua_State* L) {
  dss_rawgetp(L, LUA_REGISTRYINDEX, &self_key);
  Session* s = static_cast<Session*>(lua_touserdata(L, -1));
  lua_pushboolean(L, s && s->cancelled());
  return 1;
}

// _insession() -> whether this state is a session's
int l_insession(lua_State* L) {
  dss_rawgetp(L, LUA_REGISTRYINDEX, &self_key);
  lua_pushboolean(L, lua_touserdata(L, -1) != nullptr);
  return 1;
}

}  // namespace

void dss_open_session(lua_State* L) {
  if (luaL_newmetatable(L, kMeta)) {
    const luaL_Reg meta[] = {{"__gc", l_gc}, {"__tostring", l_tostring}, {nullptr, nullptr}};
    dss_setfuncs(L, meta, 0);
    lua_newtable(L);
    const luaL_Reg methods[] = {{"join", l_join},     {"cancel", l_cancel},
                                {"status", l_status}, {"_done", l_done},
                                {nullptr, nullptr}};
    dss_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_getfield(L, -1, "__index");  // the methods: session.lua adds to them
  lua_remove(L, -2);
  lua_newtable(L);
  lua_insert(L, -2);
  lua_setfield(L, -2, "methods");
  const luaL_Reg funcs[] = {{"spawn", l_spawn},         {"pool", l_pool},
                            {"close", l_close},         {"_cancelled", l_cancelled},
                            {"_insession", l_insession}, {nullptr, nullptr}};
  dss_setfuncs(L, funcs, 0);
}
