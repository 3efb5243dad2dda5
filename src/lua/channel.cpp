// channel.cpp -- the Lua face of dss::Channel (src/core/channel.hpp): the
// functions behind darksidesync.channel (lua/darksidesync/channel.lua) and
// the channel handle, a userdata holding one reference to a core channel.
// A handle is a copy-routine handle type (copy.hpp): sent over a channel or
// passed to a session, it arrives as a new handle of the same channel.
//
// Here, put and get block the calling thread (the main state's plain
// calls); fibers use the ops of channel.lua, which suspend the fiber.
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <new>

#include "binding.hpp"
#include "channel.hpp"
#include "compat.h"
#include "copy.hpp"

namespace {

using dss::Channel;
using dss::Message;
using dss::Suspension;
using dss::Waiter;

const char* const kMeta = "darksidesync.channel";

struct ChanUd {
  Channel* ch;  // null once collected
};

Channel* check_chan(lua_State* L, int idx) {
  ChanUd* u = static_cast<ChanUd*>(luaL_checkudata(L, idx, kMeta));
  if (!u->ch) luaL_argerror(L, idx, "darksidesync.channel: a collected channel");
  return u->ch;
}

// Pushes a new handle of ch, taking a reference of its own. May raise
// (before the reference is taken).
void push_handle(lua_State* L, Channel* ch) {
  ChanUd* u = static_cast<ChanUd*>(lua_newuserdata(L, sizeof(ChanUd)));
  u->ch = nullptr;
  luaL_getmetatable(L, kMeta);
  lua_setmetatable(L, -2);
  ch->ref();
  u->ch = ch;
}

// --- the copy routine's handle type ------------------------------------------

void* handle_retain(lua_State* L, int idx) {
  Channel* ch = static_cast<ChanUd*>(lua_touserdata(L, idx))->ch;
  if (!ch) luaL_error(L, "darksidesync.channel: a collected channel");
  ch->ref();
  return ch;
}

void handle_push(lua_State* L, void* obj) { push_handle(L, static_cast<Channel*>(obj)); }

void handle_release(void* obj) { static_cast<Channel*>(obj)->unref(); }

// --- waiting on this thread ---------------------------------------------------

// The calling thread, asleep until its suspension's wake().
struct ThreadWake {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
  static void fn(Suspension*, void* ctx) {
    ThreadWake* t = static_cast<ThreadWake*>(ctx);
    std::lock_guard<std::mutex> lock(t->mu);
    t->woken = true;
    t->cv.notify_one();
  }
  void sleep() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return woken; });
  }
};

// How an operation ended, for the Lua side.
enum class Out { done, closed, nomem };

// Waits on this thread for w's operation (w->msg holds a put's message):
// no Lua, nothing that raises. A get's message is left in *got.
Out wait_here(Channel* ch, Waiter* w, bool put, Message* got) {
  ThreadWake tw;
  w->susp = Suspension::create(&ThreadWake::fn, &tw);
  if (!w->susp) return Out::nomem;
  Channel::Res r = put ? ch->put_wait(w) : ch->get_wait(w);
  if (r == Channel::Res::blocked && w->susp->end() == Suspension::End::none) tw.sleep();
  ch->unwait(w);
  w->susp->quiesce();  // tw lives on this frame
  Suspension::End e = w->susp->end();
  if (!put && e == Suspension::End::done) *got = std::move(w->susp->message());
  w->susp->unref();
  if (r == Channel::Res::nomem) return Out::nomem;
  return e == Suspension::End::done ? Out::done : Out::closed;
}

// Pushes what a failed put or get returns: nil, "closed".
int push_closed(lua_State* L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

// The body of put: every C++ object lives and dies in here, and nothing in
// here raises. Returns LUA_OK with *out set, or a copy error status (its
// message on the stack).
int put_body(lua_State* L, Channel* ch, Out* out) {
  Waiter w;
  w.put = true;
  int st = dss::copy_out(L, 2, 1, &w.msg);
  if (st != LUA_OK) return st;
  Channel::Res r = ch->put_now(w.msg);
  if (r == Channel::Res::done) *out = Out::done;
  else if (r == Channel::Res::closed) *out = Out::closed;
  else if (r == Channel::Res::nomem) *out = Out::nomem;
  else *out = wait_here(ch, &w, true, nullptr);
  return LUA_OK;
}

// ch:put(v) -> true | nil, "closed". Blocks while the channel is full (a
// rendezvous: until a get takes v). Raises when v cannot be copied.
int l_put(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  lua_settop(L, 2);
  luaL_checkstack(L, 4, "darksidesync.channel: put");
  Out out = Out::done;
  if (put_body(L, ch, &out) != LUA_OK) return lua_error(L);
  if (out == Out::nomem) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (out == Out::closed) return push_closed(L);
  lua_pushboolean(L, 1);
  return 1;
}

// The body of get, as put_body: pushes the message's values (*n of them;
// one from a Lua put, 1 to 64 from a C thread's) or the copy error.
int get_body(lua_State* L, Channel* ch, Out* out, int* n) {
  Message m;
  Channel::Res r = ch->get_now(&m);
  if (r == Channel::Res::done) *out = Out::done;
  else if (r == Channel::Res::closed) *out = Out::closed;
  else if (r == Channel::Res::nomem) *out = Out::nomem;
  else {
    Waiter w;
    *out = wait_here(ch, &w, false, &m);
  }
  if (*out != Out::done) return LUA_OK;
  return dss::copy_in(L, m, n);
}

// ch:get() -> v | nil, "closed" (closed and empty). Blocks while empty. A
// message a C thread put with several values returns them all.
int l_get(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  lua_settop(L, 1);
  luaL_checkstack(L, 4, "darksidesync.channel: get");
  Out out = Out::done;
  int n = 0;
  if (get_body(L, ch, &out, &n) != LUA_OK) return lua_error(L);
  if (out == Out::nomem) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (out == Out::closed) return push_closed(L);
  return n;
}

// new([capacity]) -> channel. 0 or nil: a rendezvous; math.huge: unbounded.
int l_new(lua_State* L) {
  std::size_t cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    lua_Number n = luaL_checknumber(L, 1);
    if (n == HUGE_VAL) cap = Channel::kUnbounded;
    else if (n >= 0 && n == std::floor(n) && n < 1e15) cap = std::size_t(n);
    else
      return luaL_argerror(L, 1, "a capacity (an integer >= 0, or math.huge) expected");
  }
  luaL_checkstack(L, 2, "darksidesync.channel: new");
  ChanUd* u = static_cast<ChanUd*>(lua_newuserdata(L, sizeof(ChanUd)));
  u->ch = nullptr;
  luaL_getmetatable(L, kMeta);
  lua_setmetatable(L, -2);
  u->ch = Channel::create(cap);
  if (!u->ch) return luaL_error(L, "darksidesync.channel: not enough memory");
  return 1;
}

// ch:close(): no more puts; gets take what is buffered, then "closed".
// Every put or get waiting on it returns nil, "closed".
int l_close(lua_State* L) {
  check_chan(L, 1)->close();
  return 0;
}

// ch:len() (and #ch on 5.2+): values buffered, plus puts waiting.
int l_len(lua_State* L) {
  lua_pushinteger(L, lua_Integer(check_chan(L, 1)->len()));
  return 1;
}

// ch:closed() -> boolean
int l_closed(lua_State* L) {
  lua_pushboolean(L, check_chan(L, 1)->closed());
  return 1;
}

int l_gc(lua_State* L) {
  ChanUd* u = static_cast<ChanUd*>(lua_touserdata(L, 1));
  Channel* ch = u->ch;
  u->ch = nullptr;
  if (ch) ch->unref();
  return 0;
}

int l_tostring(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  lua_pushfstring(L, "darksidesync.channel: %p", static_cast<void*>(ch));
  return 1;
}

// The handle at idx, or nullptr when it is not one (5.1 has no
// luaL_testudata).
ChanUd* test_chan(lua_State* L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return nullptr;
  luaL_getmetatable(L, kMeta);
  bool same = lua_rawequal(L, -1, -2) != 0;
  lua_pop(L, 2);
  return same ? static_cast<ChanUd*>(lua_touserdata(L, idx)) : nullptr;
}

// Two handles of one channel are equal.
int l_eq(lua_State* L) {
  luaL_checkstack(L, 2, "darksidesync.channel");
  ChanUd* a = test_chan(L, 1);
  ChanUd* b = test_chan(L, 2);
  lua_pushboolean(L, a && b && a->ch && a->ch == b->ch);
  return 1;
}

}  // namespace

// The core channel of the handle at idx, or nullptr when it is not one
// (for embedders and tests: the C++ side of a channel made in Lua). The
// handle's reference stays the handle's. Never raises (idx must be valid).
Channel* dss_channel_of(lua_State* L, int idx) {
  if (!lua_checkstack(L, 2)) return nullptr;
  ChanUd* u = test_chan(L, idx);
  return u ? u->ch : nullptr;
}

void dss_push_channel(lua_State* L, Channel* ch) { push_handle(L, ch); }

// Leaves the table of channel functions on the stack (darksidesync's
// "_channel" field; channel.lua builds the module on it). May raise.
void dss_open_channel(lua_State* L) {
  static const dss::CopyHandleType type = {kMeta, handle_retain, handle_push,
                                           handle_release};
  dss::copy_register_handle(type);
  if (luaL_newmetatable(L, kMeta)) {
    const luaL_Reg meta[] = {{"__gc", l_gc},   {"__tostring", l_tostring},
                             {"__len", l_len}, {"__eq", l_eq},
                             {nullptr, nullptr}};
    dss_setfuncs(L, meta, 0);
    lua_newtable(L);
    const luaL_Reg methods[] = {{"put", l_put},       {"get", l_get},
                                {"close", l_close},   {"len", l_len},
                                {"closed", l_closed}, {nullptr, nullptr}};
    dss_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
}
