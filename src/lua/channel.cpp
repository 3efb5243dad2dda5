// channel.cpp -- the Lua face of dss::Channel (src/core/channel.hpp): the
// functions behind darksidesync.channel (lua/darksidesync/channel.lua) and
// the channel handle, a userdata holding one reference to a core channel.
// A handle is a copy-routine handle type (copy.hpp): sent over a channel or
// passed to a session, it arrives as a new handle of the same channel.
//
// put and get block the calling thread (the main state's plain calls).
// Fibers use the ops of channel.lua (put_op, get_op), built on the
// functions of the second half of this file: a try that never waits
// (put_now, get_now) and a block that registers the fiber's arms on their
// channels and suspends the fiber, not the thread (see "Fibers" below).
#include <atomic>
#include <cmath>
#include <new>
#include <thread>

#include "binding.hpp"
#include "channel.hpp"
#include "compat.h"
#include "copy.hpp"
#include "hub.hpp"
#include "thread_put.hpp"

// module.cpp: the binding's own registration in L's hub.
void* dss_own_utilid(lua_State* L, void* libid, DSS_cancel_1v0_t cancel);

namespace {

using dss::Channel;
using dss::Clock;
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
  ch->attach();
  u->ch = ch;
}

// --- the copy routine's handle type ------------------------------------------

void* handle_retain(lua_State* L, int idx) {
  Channel* ch = static_cast<ChanUd*>(lua_touserdata(L, idx))->ch;
  if (!ch) luaL_error(L, "darksidesync.channel: a collected channel");
  ch->ref();
  ch->attach();  // a message carrying it: a Lua state may get it back
  return ch;
}

void handle_push(lua_State* L, void* obj) { push_handle(L, static_cast<Channel*>(obj)); }

void handle_release(void* obj) {
  Channel* ch = static_cast<Channel*>(obj);
  ch->detach();
  ch->unref();
}

// --- waiting on this thread ---------------------------------------------------

// How an operation ended, for the Lua side.
enum class Out { done, closed, nomem };

// Waits on this thread for w's operation (w->msg holds a put's message):
// no Lua, nothing that raises. A get's message is left in *got.
Out wait_here(Channel* ch, Waiter* w, bool put, Message* got) {
  w->put = put;
  switch (dss::wait_on_thread(ch, w, false, Clock::time_point{}, got)) {
    case Suspension::End::done: return Out::done;
    case Suspension::End::none: return Out::nomem;
    default: return Out::closed;
  }
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
  u->ch->attach();
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

// register_metatable(name, mt): the copy routine's named metatables
// (copy.hpp) in this state. A table whose metatable is mt is sent with the
// name; a table arriving here under the name gets mt. Per state: each state
// registers its own.
int l_register_metatable(lua_State* L) {
  luaL_checktype(L, 1, LUA_TSTRING);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checkstack(L, 6, "darksidesync.channel: register_metatable");
  dss::copy_register_metatable(L, 1, 2);
  return 0;
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
  if (ch) {
    ch->detach();  // the last Lua handle, maybe: then it closes
    ch->unref();
  }
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

// --- fibers: operations that suspend the fiber -------------------------------
//
// channel.lua's put_op and get_op are base ops of fibers/op.lua. Their try
// is put_now / get_now below. Their block registers the arm on its channel
// through the fiber's Waits: the one core Suspension of its Lua suspension
// (shared by every channel arm of one choice) and one Waiter per arm, owned
// by the Waits, which a userdata holds (the Lua suspension's `core` field).
//
// When another party completes an arm -- a thread, another state, another
// fiber of this state -- or closes its channel, the suspension's wake()
// delivers an item to this state's own hub: the one wake-up path (a
// scheduler asleep in darksidesync.wait or on the hub's fd, a session parked
// on the hub's hook, all wake up). Its decoder, run here by poll or
// dispatch, hands the completer (a Lua function channel.lua registers) the
// Lua suspension, and the completer takes the result through result().
//
// A local completion of the same choice (a timer, a fibers channel) must
// claim the core suspension first (claim(): cancel()); when that fails, a
// channel arm won and its item is on its way.

const char* const kMsgMeta = "darksidesync.channel.message";
const char* const kWaitsMeta = "darksidesync.channel.waits";
const char completer_key = 0;  // registry: the completer (set_completer)
const char own_libid = 0;      // our registration's libid in each hub

// What put_op copied, until a put moves it into a channel.
struct MsgUd {
  Message* m;  // null once collected
  bool full;   // holds a copy (else: moved into a channel or an arm)
};

struct Arm {
  Waiter w;
  Channel* ch;  // a reference of its own
  Arm* next;
};

struct Waits {
  std::atomic<int> refs{1};  // the userdata's, plus one per item in flight
  Suspension* susp = nullptr;
  void* utilid = nullptr;  // where wake() delivers
  Arm* arms = nullptr;
  // The Lua thread's (the userdata's methods, the item's decoder):
  int anchor = LUA_NOREF;  // registry reference of the Lua suspension
  bool released = false;   // arms and suspension let go
  bool held = false;       // hold(): busy, ours until claim() or unhold()
  bool gc_stopped = false; // hold() stopped the collector (restarted after)
  bool taken = false;      // a completed get's message was copied in
};

struct WaitsUd {
  Waits* w;  // null once collected
};

// The per-state upvalue of waits(): our registration in this state's hub.
struct OwnReg {
  void* utilid;
};

// Lets the arms and the suspension go, once the suspension has ended
// (cancel() or a completion): unwait every arm, wait out a wake() under
// way (it reads the Waits), free. A put arm that did not complete takes its
// message with it: its value is never delivered. No Lua; never raises.
void release(Waits* w) {
  if (w->released) return;
  w->released = true;
  for (Arm* a = w->arms; a; a = a->next) a->ch->unwait(&a->w);
  w->susp->quiesce();
  // A get that completed for a fiber that never took its value (the state
  // closed first): the value goes back to its channel, not lost.
  if (!w->taken && w->susp->end() == Suspension::End::done)
    for (Arm* a = w->arms; a; a = a->next)
      if (a->w.index == w->susp->index() && !a->w.put) a->ch->give_back(w->susp->message());
  while (Arm* a = w->arms) {
    w->arms = a->next;
    a->ch->unref();
    delete a;
  }
  w->susp->unref();
  w->susp = nullptr;
}

// Drops a reference. The last one comes after release(): wake() takes its
// own before it says woken(), which release()'s quiesce() waits for, and
// the userdata lets its own go only after release(). It may be wake()'s
// (its delivery failed), on another thread: freeing a Waits calls no Lua.
void drop(Waits* w) {
  if (w->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete w;
}

// Lets go of the Lua suspension (Lua thread; allocates nothing).
void unanchor(lua_State* L, Waits* w) {
  luaL_unref(L, LUA_REGISTRYINDEX, w->anchor);
  w->anchor = LUA_NOREF;
}

// The item's decoder: the completer and the Lua suspension, for poll to
// hand out (dispatch calls it). L == NULL: cancelled (the state closes).
int decode_done(lua_State* L, void* data, void*) {
  Waits* w = static_cast<Waits*>(data);
  int n = 0;
  if (L && !w->released && w->anchor != LUA_NOREF) {
    dss_rawgetp(L, LUA_REGISTRYINDEX, &completer_key);
    if (lua_isfunction(L, -1)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchor);
      n = 2;
    } else {
      lua_pop(L, 1);
    }
  }
  drop(w);
  return n;
}

// The suspension's wake(), on the completing party's thread, no lock held:
// an item for this state's hub, holding a reference. A hub that stopped
// (the state is closing) takes nothing: the Waits is freed with its
// userdata.
void wake_fiber(Suspension* s, void* ctx) {
  Waits* w = static_cast<Waits*>(ctx);
  w->refs.fetch_add(1, std::memory_order_relaxed);
  // w is ours now: release() need not wait for the delivery below.
  s->woken();
  int rc = dss::Hub::deliver_internal(w->utilid, &decode_done, w);
  if (rc != DSS_SUCCESS && rc != DSS_ERR_UDP_SEND_FAILED) drop(w);
}

void own_cancel(void*) {}

MsgUd* check_msg(lua_State* L, int idx) {
  MsgUd* u = static_cast<MsgUd*>(luaL_checkudata(L, idx, kMsgMeta));
  if (!u->m) luaL_argerror(L, idx, "darksidesync.channel: a collected message");
  return u;
}

// Copies the value at idx into u's message unless it holds one. Returns
// LUA_OK or the copy error (its message on the stack); never raises.
int fill(lua_State* L, MsgUd* u, int idx) {
  if (u->full) return LUA_OK;
  u->m->clear();
  int st = dss::copy_out(L, idx, 1, u->m);
  if (st == LUA_OK) u->full = true;
  return st;
}

// message(v) -> a copy of v, for put_now and waits:put. Raises the copy
// error when v cannot be copied.
int l_message(lua_State* L) {
  lua_settop(L, 1);
  luaL_checkstack(L, 4, "darksidesync.channel: put_op");
  MsgUd* u = static_cast<MsgUd*>(lua_newuserdata(L, sizeof(MsgUd)));
  u->m = nullptr;
  u->full = false;
  luaL_getmetatable(L, kMsgMeta);
  lua_setmetatable(L, -2);
  u->m = new (std::nothrow) Message;
  if (!u->m) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (fill(L, u, 1) != LUA_OK) return lua_error(L);
  return 1;
}

int l_message_gc(lua_State* L) {
  MsgUd* u = static_cast<MsgUd*>(lua_touserdata(L, 1));
  delete u->m;
  u->m = nullptr;
  return 0;
}

// Pushes a try's "closed" results: true, nil, "closed".
int push_try_closed(lua_State* L) {
  lua_pushboolean(L, 1);
  return push_closed(L) + 1;
}

// put_now(ch, m, v) -> false (it would wait) | true, true | true, nil,
// "closed". m's copy moves into the channel when it completes; an empty m
// (a performance before took it) is filled from v first, raising the copy
// error.
int l_put_now(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  MsgUd* u = check_msg(L, 2);
  lua_settop(L, 3);
  luaL_checkstack(L, 4, "darksidesync.channel: put");
  if (fill(L, u, 3) != LUA_OK) return lua_error(L);
  Channel::Res r = ch->put_now(*u->m);
  if (r == Channel::Res::nomem) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (r == Channel::Res::blocked) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r == Channel::Res::closed) return push_try_closed(L);
  u->full = false;
  lua_pushboolean(L, 1);
  lua_pushboolean(L, 1);
  return 2;
}

// The body of try_put: the message lives and dies here, and nothing here
// raises. A copy error status leaves its message on the stack.
int try_put_body(lua_State* L, Channel* ch, Channel::Res* r) {
  Message m;
  int st = dss::copy_out(L, 2, 1, &m);
  if (st != LUA_OK) return st;
  *r = ch->put_now(m);
  return LUA_OK;
}

// try_put(ch, v) -> true | nil, "closed" | false (it would wait; nothing
// sent). A fiber's put tries this first: no op, no message userdata. Raises
// when v cannot be copied.
int l_try_put(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  lua_settop(L, 2);
  luaL_checkstack(L, 4, "darksidesync.channel: put");
  Channel::Res r = Channel::Res::blocked;
  if (try_put_body(L, ch, &r) != LUA_OK) return lua_error(L);
  if (r == Channel::Res::nomem) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (r == Channel::Res::closed) return push_closed(L);
  lua_pushboolean(L, r == Channel::Res::done);
  return 1;
}

// The body of get_now: the message lives and dies here, and nothing here
// raises. Pushes the value when one was taken (or the copy error).
int get_now_body(lua_State* L, Channel* ch, Channel::Res* r, int* n) {
  Message m;
  *r = ch->get_now(&m);
  if (*r != Channel::Res::done) return LUA_OK;
  return dss::copy_in(L, m, n);
}

// get_now(ch) -> false (it would wait) | true, values... | true, nil,
// "closed" (a message a C thread put holds several values)
int l_get_now(lua_State* L) {
  Channel* ch = check_chan(L, 1);
  lua_settop(L, 1);
  luaL_checkstack(L, 4, "darksidesync.channel: get");
  lua_pushboolean(L, 1);
  Channel::Res r = Channel::Res::blocked;
  int n = 0;
  if (get_now_body(L, ch, &r, &n) != LUA_OK) return lua_error(L);
  if (r == Channel::Res::nomem) return luaL_error(L, "darksidesync.channel: not enough memory");
  if (r == Channel::Res::blocked) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r == Channel::Res::closed) return push_closed(L) + 1;
  return n + 1;
}

// waits(s) -> a Waits for the Lua suspension s, anchoring s until it ends.
// Upvalue 1: this state's OwnReg.
int l_waits(lua_State* L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  luaL_checkstack(L, 4, "darksidesync.channel: block");
  OwnReg* own = static_cast<OwnReg*>(lua_touserdata(L, lua_upvalueindex(1)));
  if (!own->utilid) own->utilid = dss_own_utilid(L, const_cast<char*>(&own_libid), &own_cancel);
  if (!own->utilid)
    return luaL_error(L, "darksidesync.channel: not started, or already stopped");
  WaitsUd* u = static_cast<WaitsUd*>(lua_newuserdata(L, sizeof(WaitsUd)));
  u->w = nullptr;
  luaL_getmetatable(L, kWaitsMeta);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  Waits* w = new (std::nothrow) Waits;
  Suspension* s = w ? Suspension::create(&wake_fiber, w, true) : nullptr;
  if (!s) {
    delete w;
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "darksidesync.channel: not enough memory");
  }
  w->susp = s;
  w->utilid = own->utilid;
  w->anchor = ref;
  u->w = w;
  return 1;
}

Waits* check_waits(lua_State* L, int idx) {
  WaitsUd* u = static_cast<WaitsUd*>(luaL_checkudata(L, idx, kWaitsMeta));
  if (!u->w || u->w->released)
    luaL_argerror(L, idx, "darksidesync.channel: a suspension no longer waiting");
  return u->w;
}

// How registering an arm went.
enum class Armed { waiting, done, closed, failed };

// Registers one arm (a put when msg is set: its message moves into the
// arm). waiting: registered -- or not, the suspension having ended by
// another party's completion, whose item is on its way. failed: out of
// memory, and the suspension cancelled (if it could not be, an arm
// completed meanwhile: waiting). No Lua; never raises.
Armed arm(Waits* w, Channel* ch, Message* msg, int index) {
  Arm* a = new (std::nothrow) Arm;
  Channel::Res r = Channel::Res::nomem;
  if (a) {
    ch->ref();
    a->ch = ch;
    a->next = w->arms;
    w->arms = a;
    a->w.susp = w->susp;
    a->w.index = index;
    if (msg) a->w.msg = std::move(*msg);
    r = msg ? ch->put_wait(&a->w) : ch->get_wait(&a->w);
  }
  if (r == Channel::Res::done) return Armed::done;
  if (r == Channel::Res::closed) return Armed::closed;
  if (r == Channel::Res::blocked) return Armed::waiting;
  return w->susp->cancel() ? Armed::failed : Armed::waiting;
}

// After an arm or a result: the Waits is done. Pushes the results of an
// arm that completed, as a try's (true, results...), or false and the
// error (message on the stack already, when st != LUA_OK). Returns how
// many values it pushed on top of n already there.
int finish(lua_State* L, Waits* w, Armed how, bool put, int st, int n) {
  release(w);
  unanchor(L, w);
  if (how == Armed::failed || st != LUA_OK) {
    if (st == LUA_OK) lua_pushliteral(L, "darksidesync.channel: not enough memory");
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  if (how == Armed::closed) return push_try_closed(L);
  if (put) {
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -n - 1);
  return n + 1;
}

// Pushes the values of a get the suspension completed (copied in from its
// message). Returns LUA_OK or the copy error; *n: how many.
int push_got(lua_State* L, Waits* w, int* n) {
  *n = 0;
  w->taken = true;
  return dss::copy_in(L, w->susp->message(), n);
}

// w:put(ch, m, index, v) / w:get(ch, index): registers an arm of index
// `index`. Returns nothing while it waits; when it completed at once (or
// failed), the Waits is done, and it returns true and the op's results, or
// false and an error.
int add_arm(lua_State* L, bool put) {
  Waits* w = check_waits(L, 1);
  Channel* ch = check_chan(L, 2);
  MsgUd* u = put ? check_msg(L, 3) : nullptr;
  int index = int(luaL_checkinteger(L, put ? 4 : 3));
  luaL_checkstack(L, 6, "darksidesync.channel: block");
  int st = put ? fill(L, u, 5) : LUA_OK;
  Armed how = Armed::failed;
  if (st != LUA_OK) {
    if (!w->susp->cancel()) return 0;  // an arm completed: its item comes
  } else {
    how = arm(w, ch, put ? u->m : nullptr, index);
    if (put) u->full = false;
  }
  if (how == Armed::waiting) return 0;
  int n = 0;
  if (how == Armed::done && !put) st = push_got(L, w, &n);
  return finish(L, w, how, put, st, n);
}

int l_waits_put(lua_State* L) { return add_arm(L, true); }
int l_waits_get(lua_State* L) { return add_arm(L, false); }

// Ends a hold: the suspension finished (claim, gc) or back to waiting
// (unhold), then the collector runs again if hold() stopped it.
void end_hold(lua_State* L, Waits* w, bool finish) {
  w->held = false;
  if (finish) w->susp->finish(Suspension::End::cancelled, -1);
  else w->susp->abort();
  if (w->gc_stopped) {
    w->gc_stopped = false;
    lua_gc(L, LUA_GCRESTART, 0);
  }
}

// w:claim() -> true when the caller may complete the Lua suspension (the
// channel arms are cancelled and let go; true too when none is attached
// any more), false when a channel arm completed first.
int l_waits_claim(lua_State* L) {
  WaitsUd* u = static_cast<WaitsUd*>(luaL_checkudata(L, 1, kWaitsMeta));
  Waits* w = u->w;
  if (w && !w->released) {
    if (w->held) {
      end_hold(L, w, true);
    } else if (!w->susp->cancel()) {
      lua_pushboolean(L, 0);
      return 1;
    }
    release(w);
    unanchor(L, w);
  }
  lua_pushboolean(L, 1);
  return 1;
}

// w:hold() -> true | false: the first step of a two-step claim, for a
// completer that must do something it cannot undo before it knows whether
// it completes (a socket's read). True: no channel arm can complete until
// claim() (which then succeeds) or unhold(); false: a channel arm
// completed first. A completer on another thread meanwhile waits (briefly:
// the hold lasts one attempt, no Lua call that blocks). The collector is
// stopped while it lasts: a finalizer run by an allocation of the attempt
// could touch a channel whose completer spins on this suspension under
// that channel's lock, or this suspension's own channel, and never return.
int l_waits_hold(lua_State* L) {
  WaitsUd* u = static_cast<WaitsUd*>(luaL_checkudata(L, 1, kWaitsMeta));
  Waits* w = u->w;
  bool ok = true;
  if (w && !w->released && !w->held) {
    for (unsigned spins = 0;; ++spins) {
      Suspension::Begin b = w->susp->begin();
      if (b == Suspension::Begin::busy) {  // another party is ending it
        if (spins > 64) std::this_thread::yield();
        continue;
      }
      ok = b == Suspension::Begin::got;
      w->held = ok;
      if (ok && dss_gc_isrunning(L)) {
        lua_gc(L, LUA_GCSTOP, 0);
        w->gc_stopped = true;
      }
      break;
    }
  }
  lua_pushboolean(L, ok);
  return 1;
}

// w:unhold(): back to waiting after hold(), nothing completed.
int l_waits_unhold(lua_State* L) {
  WaitsUd* u = static_cast<WaitsUd*>(luaL_checkudata(L, 1, kWaitsMeta));
  Waits* w = u->w;
  if (w && w->held) end_hold(L, w, false);
  return 0;
}

// w:result() -> index, true, results... | index, false, error: the arm
// that completed (or whose channel closed), for the completer; the Waits
// is done.
int l_waits_result(lua_State* L) {
  Waits* w = check_waits(L, 1);
  luaL_checkstack(L, 6, "darksidesync.channel: result");
  Suspension::End e = w->susp->end();
  if (e != Suspension::End::done && e != Suspension::End::closed)
    return luaL_error(L, "darksidesync.channel: no operation completed");
  int index = w->susp->index();
  bool put = false;
  for (Arm* a = w->arms; a; a = a->next)
    if (a->w.index == index) put = a->w.put;
  lua_pushinteger(L, index);
  Armed how = e == Suspension::End::done ? Armed::done : Armed::closed;
  int n = 0;
  int st = how == Armed::done && !put ? push_got(L, w, &n) : LUA_OK;
  return 1 + finish(L, w, how, put, st, n);
}

int l_waits_gc(lua_State* L) {
  WaitsUd* u = static_cast<WaitsUd*>(lua_touserdata(L, 1));
  Waits* w = u->w;
  u->w = nullptr;
  if (!w) return 0;
  // Still waiting only when the state closes (a waiting one is anchored):
  // whatever ended it, nothing will look at it now. The anchor goes with
  // the registry.
  if (!w->released) {
    if (w->held) end_hold(L, w, true);  // (the state closing: unreachable otherwise)
    else w->susp->cancel();
    release(w);
  }
  drop(w);
  return 0;
}

// set_completer(f): f(s) is what the item of a completed fiber operation
// calls (channel.lua's; it calls s.core:result()).
int l_set_completer(lua_State* L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &completer_key);
  return 0;
}

// The metatables of messages and Waits, and their functions in the table
// on top of the stack. May raise.
void open_fiber_ops(lua_State* L) {
  if (luaL_newmetatable(L, kMsgMeta)) {
    lua_pushcfunction(L, l_message_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, kWaitsMeta)) {
    lua_pushcfunction(L, l_waits_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    const luaL_Reg methods[] = {{"put", l_waits_put},
                                {"get", l_waits_get},
                                {"claim", l_waits_claim},
                                {"hold", l_waits_hold},
                                {"unhold", l_waits_unhold},
                                {"result", l_waits_result},
                                {nullptr, nullptr}};
    dss_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  const luaL_Reg funcs[] = {{"put", l_put},  // the thread-blocking ones
                            {"get", l_get},
                            {"message", l_message},
                            {"put_now", l_put_now},
                            {"try_put", l_try_put},
                            {"get_now", l_get_now},
                            {"set_completer", l_set_completer},
                            {nullptr, nullptr}};
  dss_setfuncs(L, funcs, 0);
  OwnReg* own = static_cast<OwnReg*>(lua_newuserdata(L, sizeof(OwnReg)));
  own->utilid = nullptr;
  lua_pushcclosure(L, l_waits, 1);
  lua_setfield(L, -2, "waits");
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
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, l_register_metatable);
  lua_setfield(L, -2, "register_metatable");
  lua_getfield(L, -2, "__index");
  lua_setfield(L, -2, "methods");  // channel.lua adds the Lua ones
  lua_remove(L, -2);
  open_fiber_ops(L);
}
