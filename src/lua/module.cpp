// module.cpp -- luaopen_darksidesync: the Lua face of the hub, and the C
// ABI (1v0, 2v0, 2v1, 2v2) published in the registry.
//
// Lua errors are longjmps. Every function here keeps C++ objects with
// destructors out of any frame that can raise; where a client callback runs
// (it may raise, despite the 1.0 rule) it runs under lua_pcall, the item is
// ended, and only then is the error re-raised.
#include "binding.hpp"
#include "compat.h"
#include "interrupt.hpp"
#include "session.hpp"

#include <dlfcn.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <type_traits>

#include "../core/hub.hpp"

using dss::Blocking;
using dss::Hub;
using dss::Taken;
using dss::TicketId;

namespace {

// Registry keys: the addresses of these statics.
const char hub_key = 0;     // light userdata: this state's Hub*
const char closer_key = 0;  // the current closer userdata (see below)
// The value of registry[&hub_key] once the hub closed: the state is
// stopping, and must not start a new hub from a late require.
const char stopped_mark = 0;
const char errh_key = 0;     // dispatch's error handler (seterrorhandler)
const char box_key = 0;      // the HubBox (below)
const char wts_key = 0;      // waiting-thread callbacks made ahead (push_wt)
const char closers_key = 0;  // weak-valued table of every closer (below)

const char* const WT_MT = "darksidesync.waitingthread";
const char* const CLOSER_MT = "darksidesync.closer";
const char* const STOPPED_MSG = "darksidesync: not started, or already stopped";

// The value of registry[&hub_key]: a Hub*, &stopped_mark, or nullptr.
// Never raises.
void* hub_entry(lua_State* L) {
  if (!L || !lua_checkstack(L, 1)) return nullptr;
  dss_rawgetp(L, LUA_REGISTRYINDEX, &hub_key);
  void* p = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return p;
}

// The hub of L's state, or nullptr. Never raises.
Hub* hub_of(lua_State* L) {
  void* p = hub_entry(L);
  return p == &stopped_mark ? nullptr : static_cast<Hub*>(p);
}

// The running hub of L's state, or raises.
Hub* check_hub(lua_State* L) {
  Hub* hub = hub_of(L);
  if (!hub || hub->state() != Hub::State::running)
    luaL_error(L, "%s", STOPPED_MSG);
  return hub;
}

// The Lua side's one hold on the hub. A HubBox is a plain userdata (no
// finalizer, so its memory stays valid until the state is freed, through
// every finalizer lua_close runs) anchored in the registry; it owns a
// reference to the state's hub while that runs, and is emptied when the hub
// closes, so nothing that reaches the hub through it (poll, dispatch and
// queuesize as an upvalue; closers and waiting-thread callbacks) can find a
// closed or freed one.
struct DispatchCtx;

struct HubBox {
  Hub* hub;
  DispatchCtx* dispatching;  // the innermost dispatch running, if any
  int wts;                   // ready waiting-thread callbacks (push_wt)
};

// The running hub in the HubBox upvalue `up`, or raises.
inline Hub* check_box(lua_State* L, int up) {
  Hub* hub = static_cast<HubBox*>(lua_touserdata(L, lua_upvalueindex(up)))->hub;
  if (!hub || hub->state() != Hub::State::running)
    luaL_error(L, "%s", STOPPED_MSG);
  return hub;
}

HubBox* box_of(lua_State* L);
void push_closer(lua_State* L, HubBox* box);
int renew_closer(lua_State* L);

// A non-negative integer argument (a count), or raises. Numeric strings
// count as numbers, as in Lua's own argument checks.
lua_Integer check_count(lua_State* L, int arg) {
  lua_Integer v = 0;
  if (!dss_numberarg(L, arg))
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "non-negative integer expected, got %s",
                                  lua_isnone(L, arg) ? "no value"
                                                     : luaL_typename(L, arg)));
  if (!dss_tointegerx(L, arg, &v) || v < 0)
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "non-negative integer expected, got %f",
                                  lua_tonumber(L, arg)));
  return v;
}

// --- the 1v0 C ABI ---------------------------------------------------------

extern "C" {

// The end of a registration on L: the closer that notices lua_close is
// renewed (without memory for it, the registration is undone); the code
// goes to *err.
static void* reg_done(lua_State* L, void* utilid, int rc, int* err) {
  if (rc == DSS_SUCCESS && dss_cpcall(L, renew_closer, nullptr) != LUA_OK) {
    Hub::unreg(utilid);
    utilid = nullptr;
    rc = DSS_ERR_OUT_OF_MEMORY;
  }
  if (err) *err = rc;
  return utilid;
}

static void* api_reg(lua_State* L, void* libid, DSS_cancel_1v0_t cancel,
                     int* err) {
  Hub* hub = hub_of(L);
  if (!hub) return reg_done(L, nullptr, DSS_ERR_NOT_STARTED, err);
  int rc;
  void* utilid = hub->reg(libid, cancel, &rc);
  return reg_done(L, utilid, rc, err);
}

static void* api_getutilid(lua_State* L, void* libid, int* err) {
  Hub* hub = hub_of(L);
  if (!hub) {
    if (err) *err = DSS_ERR_NOT_STARTED;
    return nullptr;
  }
  return hub->getutilid(libid, err);
}

static int api_deliver(void* utilid, DSS_decoder_1v0_t decode,
                       DSS_return_1v0_t ret, void* data) {
  return Hub::deliver(utilid, decode, ret, data);
}

static int api_unreg(void* utilid) { return Hub::unreg(utilid); }

static int api_deliver2(void* utilid, DSS_decoder_1v0_t decode,
                        DSS_return_1v0_t ret, void* data, unsigned flags,
                        long timeout_ms) {
  return Hub::deliver2(utilid, decode, ret, data, flags, timeout_ms);
}

static long api_queued(void* utilid) { return Hub::queued(utilid); }

static void* api_regc(lua_State* L, void* libid, DSS_cancel_2v0_t cancel,
                      void* context, const char* name, int* err) {
  Hub* hub = hub_of(L);
  if (!hub) return reg_done(L, nullptr, DSS_ERR_NOT_STARTED, err);
  int rc;
  void* utilid = hub->regc(libid, cancel, context, name, &rc);
  return reg_done(L, utilid, rc, err);
}

static int api_deliverc(void* utilid, DSS_decoder_2v0_t decode,
                        DSS_return_2v0_t ret, void* data, unsigned flags,
                        long timeout_ms) {
  return Hub::deliverc(utilid, decode, ret, data, flags, timeout_ms);
}

}  // extern "C"

DSS_api_1v0_t api_1v0 = {DSS_API_1v0_KEY, api_reg, api_getutilid, api_deliver,
                         api_unreg};
DSS_api_2v0_t api_2v0 = {DSS_API_2v0_KEY, api_reg,      api_getutilid,
                         api_deliver,     api_unreg,    api_deliver2,
                         api_queued};
DSS_api_2v1_t api_2v1 = {DSS_API_2v1_KEY, api_reg,      api_getutilid,
                         api_deliver,     api_unreg,    api_deliver2,
                         api_queued,      api_regc,     api_deliverc};
DSS_api_2v2_t api_2v2 = {DSS_API_2v2_KEY,         api_reg,
                         api_getutilid,           api_deliver,
                         api_unreg,               api_deliver2,
                         api_queued,              api_regc,
                         api_deliverc,            dss_api_channel_retain,
                         dss_api_channel_release, dss_api_channel_put,
                         dss_api_channel_close};

// --- closers: close the hub when the Lua state closes -----------------------
//
// A closer is a small userdata whose __gc closes the hub when lua_close
// finalizes it. At lua_close every Lua version runs finalizers newest
// first, and we want the hub closed (pending items cancelled with L == NULL,
// as the contract says) before any waiting-thread callback is finalized and
// before a 5.1/LuaJIT client library is unloaded. So each time poll makes a
// waiting-thread callback, and each time a client registers, a fresh closer
// is made, newer than it, and becomes the registry's current one.
//
// Which closer finalizer is lua_close's? Every closer is also a value in a
// weak-valued registry table. A closer collected in an ordinary cycle is
// unreachable, and every Lua version removes such an object from weak
// values before its finalizer runs; lua_close finalizes every object
// without clearing weak tables first. So a closer that finds itself still
// in the table is being finalized by lua_close, whether or not it is the
// current one: a finalizer that ran before it during lua_close may have
// made a newer closer, and objects made during lua_close are never
// finalized. The first such closer closes the hub; the others find the box
// empty.

struct Closer {
  HubBox* box;
};

// The close path's cancel caller: the client's cancel runs protected, so a
// cancel that raises (despite the 1.0 rule) cannot cut the close short; its
// error is dropped (there is no caller to hand it to).
struct CancelCtx {
  DSS_cancel_1v0_t cancel;
  void* utilid;
  bool called;
};

int cancel_tramp(lua_State* L) {
  CancelCtx* c = static_cast<CancelCtx*>(lua_touserdata(L, 1));
  c->called = true;
  Hub::call_cancel(c->cancel, c->utilid);
  return 0;
}

void call_cancel(void* L, DSS_cancel_1v0_t cancel, void* utilid) {
  CancelCtx c = {cancel, utilid, false};
  dss_cpcall(static_cast<lua_State*>(L), cancel_tramp, &c);
  // No stack or memory for the protected call: call it as 1.0 did.
  if (!c.called) Hub::call_cancel(cancel, utilid);
}

// Whether the closer at index idx is still in the weak table (see above).
bool in_closers(lua_State* L, int idx) {
  if (!lua_checkstack(L, 3)) return true;  // cannot tell: assume lua_close
  dss_rawgetp(L, LUA_REGISTRYINDEX, &closers_key);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return true;
  }
  dss_rawgetp(L, -1, lua_touserdata(L, idx));
  bool in = lua_rawequal(L, -1, idx) != 0;
  lua_pop(L, 2);
  return in;
}

int closer_gc(lua_State* L) {
  Closer* cl = static_cast<Closer*>(lua_touserdata(L, 1));
  HubBox* box = cl->box;
  cl->box = nullptr;
  if (!box || !box->hub || !in_closers(L, 1)) return 0;
  Hub* hub = box->hub;
  box->hub = nullptr;
  // From now on reg/getutilid and the Lua functions see "not started",
  // and a late require cannot start a new hub.
  lua_pushlightuserdata(L, const_cast<char*>(&stopped_mark));
  dss_rawsetp(L, LUA_REGISTRYINDEX, &hub_key);
  hub->close(call_cancel, L);
  hub->unref();  // the box's
  return 0;
}

// The state's HubBox (registry), or nullptr. Never raises.
HubBox* box_of(lua_State* L) {
  if (!lua_checkstack(L, 1)) return nullptr;
  dss_rawgetp(L, LUA_REGISTRYINDEX, &box_key);
  HubBox* box = static_cast<HubBox*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return box;
}

// Pushes a new closer for box, makes it the current one and leaves it on
// the stack. May raise (allocation); then nothing changed but an unowned
// userdata.
void push_closer(lua_State* L, HubBox* box) {
  Closer* cl = static_cast<Closer*>(lua_newuserdata(L, sizeof(Closer)));
  cl->box = nullptr;
  luaL_getmetatable(L, CLOSER_MT);
  lua_setmetatable(L, -2);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &closers_key);
  lua_pushvalue(L, -2);
  dss_rawsetp(L, -2, cl);  // closers[light cl] = cl
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &closer_key);
  cl->box = box;
}

// Under dss_cpcall from reg: a closer newer than the client library being
// registered. On 5.1 and LuaJIT, require gives each C library a handle whose
// finalizer unloads it, made just before its luaopen runs; our close must
// run (and call the client's cancel) before that handle unloads its code.
int renew_closer(lua_State* L) {
  HubBox* box = box_of(L);
  if (box) push_closer(L, box);
  return 0;
}

// --- poll --------------------------------------------------------------------

// The body of a waiting-thread callback userdata: the box (not the hub: the
// callback may outlive it) and the core's ticket of its item, 0 once spent.
// Plain numbers: a callback freed without its finalizer
// (debug.setmetatable(wt, nil)) leaves nothing in the core pointing at it.
struct Wt {
  HubBox* box;
  TicketId ticket;
};

struct PollCtx {
  Hub* hub;
  Taken cur;  // taken and not yet settled: poll ends it
  int n;      // the callback and its arguments decode_item left
};

// Waiting-thread callbacks are made kWtBatch at a time, ahead, into
// registry[&wts_key] (slots 1..box->wts), and then one closer: each one
// handed out is older than the current closer, as lua_close needs (see
// above), for one closer per batch instead of one per callback. A batch cut
// short by an allocation error leaves box->wts at 0 (its callbacks, newer
// than the closer, are never handed out, and are overwritten).
constexpr int kWtBatch = 32;

void make_wts(lua_State* L, HubBox* box) {
  luaL_checkstack(L, 4, "darksidesync: waiting-thread callback");
  dss_rawgetp(L, LUA_REGISTRYINDEX, &wts_key);
  luaL_getmetatable(L, WT_MT);
  for (int i = 1; i <= kWtBatch; ++i) {
    Wt* w = static_cast<Wt*>(lua_newuserdata(L, sizeof(Wt)));
    w->box = box;
    w->ticket = 0;
    lua_pushvalue(L, -2);
    lua_setmetatable(L, -2);
    lua_rawseti(L, -3, i);
  }
  lua_pop(L, 2);
  push_closer(L, box);
  lua_pop(L, 1);
  box->wts = kWtBatch;
}

// Leaves an empty waiting-thread callback on the stack: the next ready one
// (made by make_wts). May raise (allocation).
Wt* push_wt(lua_State* L, HubBox* box) {
  if (box->wts <= 0) make_wts(L, box);
  luaL_checkstack(L, 3, "darksidesync: waiting-thread callback");
  dss_rawgetp(L, LUA_REGISTRYINDEX, &wts_key);
  int i = box->wts--;
  lua_rawgeti(L, -1, i);
  lua_pushnil(L);
  lua_rawseti(L, -3, i);  // the pool lets it go: collectable once Lua does
  lua_remove(L, -2);
  return static_cast<Wt*>(lua_touserdata(L, -1));
}

// Pushes how error messages name a client: 'name' for a regc one with a
// name, else its utilid (0x...).
void push_client(lua_State* L, void* utilid) {
  char name[64];
  if (Hub::client_name(utilid, name, sizeof name) > 0)
    lua_pushfstring(L, "'%s'", name);
  else
    lua_pushfstring(L, "%p", utilid);
}

// Names the client whose callback raised: a string error at the top of the
// stack becomes "<error> (raised by the <what> of darksidesync client
// '<name>')", or "... client 0x<utilid>)" for a client registered without
// a name. Other error values are left alone. May raise (memory) -- call it
// with no item unfinished.
void label_error(lua_State* L, void* utilid, const char* what) {
  if (lua_type(L, -1) != LUA_TSTRING || !lua_checkstack(L, 4)) return;
  lua_pushfstring(L, " (raised by the %s of darksidesync client ", what);
  push_client(L, utilid);
  lua_pushliteral(L, ")");
  lua_concat(L, 4);
}

// Checks what a decoder returned against what it pushed. May raise.
void check_pushed(lua_State* L, int n) {
  int top = lua_gettop(L);
  if (n > top)
    luaL_error(L, "darksidesync: decoder returned %d but pushed %d value(s)",
               n, top);
}

// Turns what a decoder returned, n values on top of the stack (the callback,
// then its arguments), into the callback and an args table holding the
// arguments from index off + 1. May raise (allocation).
void pack_args(lua_State* L, int n, int off) {
  luaL_checkstack(L, 4, "darksidesync: poll");
  lua_createtable(L, n - 1 + off, 0);
  lua_insert(L, -n);  // callback, table, arguments
  int args = lua_gettop(L) - n + 1;
  for (int i = n - 1; i >= 1; --i) lua_rawseti(L, args, i + off);  // last first
}

// Decodes the item taken into *cur and leaves on the stack the item's
// callback and its arguments -- a blocking item's waiting-thread callback
// first among them -- returning how many values that is; 0, with an empty
// stack, when the decoder returned <= 0. The item ends (settles) as soon as
// nothing more can raise for it: until then a raise leaves it in *cur, and
// the caller's protected call ends it (finish: as a decoder returning 0).
// poll and dispatch both decode through here.
int decode_item(lua_State* L, Hub* hub, HubBox* box, Taken* cur) {
  int n = hub->call_decoder(*cur, L);
  if (n > 0) check_pushed(L, n);
  Taken item = *cur;
  if (n > 0 && item.blk) {
    int first = lua_gettop(L) - n + 1;  // the callback
    luaL_checkstack(L, 4, "darksidesync: waiting-thread callback");
    Wt* w = push_wt(L, box);
    lua_insert(L, first + 1);  // before the first argument
    *cur = Taken();
    w->ticket = hub->settle(item, ++n);  // parked: w answers it
    return n;
  }
  *cur = Taken();
  hub->settle(item, n);  // ended
  if (n > 0) return n;
  lua_settop(L, 0);  // whatever a decoder left
  return 0;
}

// Runs under lua_pcall from poll: decodes the item and builds poll's
// callback and args table. Returns nothing when the decoder returned <= 0.
int decode_tramp(lua_State* L) {
  PollCtx* c = static_cast<PollCtx*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  HubBox* box = static_cast<HubBox*>(lua_touserdata(L, lua_upvalueindex(1)));
  c->n = decode_item(L, c->hub, box, &c->cur);
  if (c->n <= 0) return 0;
  pack_args(L, c->n, 0);
  return 2;
}

static_assert(std::is_trivially_destructible<Taken>::value &&
                  std::is_trivially_destructible<PollCtx>::value,
              "poll's frame must hold nothing a longjmp would skip");

// poll() -> -1 | remaining | remaining, callback, args
int l_poll(lua_State* L) {
  Hub* hub = check_box(L, 2);
  lua_settop(L, 0);  // poll takes no arguments; a decoder sees an empty stack
  luaL_checkstack(L, 4, "darksidesync: poll");
  PollCtx c = {hub, hub->take(), 0};
  if (!c.cur) {
    lua_pushinteger(L, -1);
    return 1;
  }
  void* utilid = c.cur.utilid();
  // The item is ours until it ends: its decoder runs under a pcall, and
  // nothing may raise until the item is settled and the drain left.
  hub->drain_enter();
  lua_pushvalue(L, lua_upvalueindex(1));  // decode_tramp
  lua_pushlightuserdata(L, &c);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  bool decoder_raised = bool(c.cur);
  if (decoder_raised) hub->finish(c.cur);
  hub->drain_leave();
  if (status != LUA_OK) {
    if (decoder_raised) label_error(L, utilid, "decoder");
    return lua_error(L);
  }
  lua_pushinteger(L, lua_Integer(hub->size()));
  if (c.n <= 0) return 1;
  lua_insert(L, 1);
  return 3;
}

// --- dispatch ------------------------------------------------------------------

struct DispatchCtx {
  Hub* hub;
  HubBox* box;
  lua_Integer max;  // items to run
  lua_Integer ran;  // items taken so far
  Taken cur;        // taken and not yet settled: the pcall's owner ends it
  void* running;    // the utilid of the item whose Lua callback runs
};

// A callback run by dispatch() that yields fails with Lua's "attempt to
// yield across a C-call boundary": say which one and what to do instead.
void hint_yield(lua_State* L, void* utilid) {
  if (lua_type(L, -1) != LUA_TSTRING || !lua_checkstack(L, 4)) return;
  if (!std::strstr(lua_tostring(L, -1), "attempt to yield across")) return;
  lua_pushliteral(L, " (darksidesync: the callback of an item of client ");
  push_client(L, utilid);
  lua_pushliteral(L, " yielded, but dispatch() runs callbacks in its own C frame: run each "
                     "in a coroutine or fiber of your own (poll() hands you the "
                     "callback; darksidesync.fibers runs every item in a fiber), "
                     "and answer a blocking item's waiting-thread callback later)");
  lua_concat(L, 4);
}

// Runs under lua_pcall from dispatch: takes, decodes and calls items until
// `max` ran or the queue is empty. A raise leaves the item that raised
// either settled (its callback raised) or in c->cur (its decoder, or our
// own allocation, raised).
int dispatch_tramp(lua_State* L) {
  DispatchCtx* c = static_cast<DispatchCtx*>(lua_touserdata(L, 1));
  Hub* hub = c->hub;
  lua_settop(L, 0);
  while (c->ran < c->max) {
    c->cur = hub->take();
    if (!c->cur) break;
    ++c->ran;
    void* utilid = c->cur.utilid();
    int n = decode_item(L, hub, c->box, &c->cur);
    if (n <= 0) continue;
    c->running = utilid;
    lua_call(L, n - 1, 0);
    c->running = nullptr;
    lua_settop(L, 0);  // whatever a decoder left below its values
  }
  return 0;
}

// In a dispatch's message handler: the error at index 1 gets its label (a
// client's decoder raised) or the yield hint (a callback yielded).
void label_in_handler(lua_State* L, HubBox* box) {
  DispatchCtx* c = box->dispatching;
  if (!c) return;
  lua_settop(L, 1);
  if (c->cur) label_error(L, c->cur.utilid(), "decoder");
  else if (c->running) hint_yield(L, c->running);
}

// The message handler of dispatch's pcall while an error handler is set:
// calls it once, at the point of the error, under its own pcall. Returns
// &errh_key when it ran (the error is handled) or the error it raised.
int errh_tramp(lua_State* L) {
  if (!lua_checkstack(L, 3)) return 1;  // the error, unhandled
  HubBox* box = static_cast<HubBox*>(lua_touserdata(L, lua_upvalueindex(1)));
  label_in_handler(L, box);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &errh_key);
  if (!lua_isfunction(L, -1)) {  // removed meanwhile: unhandled
    lua_pop(L, 1);
    return 1;
  }
  lua_insert(L, 1);  // f, error
  lua_settop(L, 2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) return 1;  // f's own error
  lua_pushlightuserdata(L, const_cast<char*>(&errh_key));
  return 1;
}

// The message handler of dispatch's pcall with a handler given as its
// argument (upvalue 2; upvalue 1 the HubBox): as errh_tramp, with that
// handler instead of the one seterrorhandler set.
int errh_arg_tramp(lua_State* L) {
  if (!lua_checkstack(L, 3)) return 1;  // the error, unhandled
  HubBox* box = static_cast<HubBox*>(lua_touserdata(L, lua_upvalueindex(1)));
  label_in_handler(L, box);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);  // f, error
  lua_settop(L, 2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) return 1;  // f's own error
  lua_pushlightuserdata(L, const_cast<char*>(&errh_key));
  return 1;
}

// Leaves dispatch's message handler at index 1 and nothing else, or an
// empty stack when there is none: the handler argument (ht: its type), or
// the one seterrorhandler set. Returns whether there is one.
bool dispatch_handler(lua_State* L, int ht) {
  luaL_checkstack(L, 4, "darksidesync: dispatch");
  if (ht == LUA_TFUNCTION) {
    // This call's own handler, instead of seterrorhandler's.
    lua_pushvalue(L, lua_upvalueindex(3));  // the HubBox
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, errh_arg_tramp, 2);
    lua_replace(L, 1);
    lua_settop(L, 1);
    return true;
  }
  lua_settop(L, 0);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &errh_key);
  bool handler = lua_isfunction(L, 1);
  lua_pop(L, 1);
  if (handler) lua_pushvalue(L, lua_upvalueindex(2));  // 1: errh_tramp
  return handler;
}

// dispatch([max [, handler]]) -> how many items ran
int l_dispatch(lua_State* L) {
  Hub* hub = check_box(L, 3);
  lua_Integer max;
  if (lua_isnoneornil(L, 1)) max = lua_Integer(hub->size());
  else max = check_count(L, 1);
  int ht = lua_type(L, 2);
  if (ht != LUA_TNONE && ht != LUA_TNIL && ht != LUA_TFUNCTION)
    return luaL_argerror(L, 2,
                         lua_pushfstring(L, "function or nil expected, got %s",
                                         luaL_typename(L, 2)));
  bool handler = dispatch_handler(L, ht);
  DispatchCtx c = {hub, static_cast<HubBox*>(lua_touserdata(L, lua_upvalueindex(3))),
                   max, 0, Taken(), nullptr};
  int status = LUA_OK;
  DispatchCtx* outer = c.box->dispatching;
  c.box->dispatching = &c;
  void* raised_by = nullptr;  // the client whose decoder raised, unhandled
  void* running_raised = nullptr;  // whose callback raised, unhandled
  hub->drain_enter();
  while (c.ran < c.max) {
    lua_pushvalue(L, lua_upvalueindex(1));  // dispatch_tramp
    lua_pushlightuserdata(L, &c);
    status = lua_pcall(L, 1, 0, handler ? 1 : 0);
    raised_by = nullptr;
    void* yielded = c.running;  // a callback raised (maybe by yielding)
    c.running = nullptr;
    if (c.cur) {
      raised_by = c.cur.utilid();
      hub->finish(c.cur);  // a raising decoder ends the item, as 0 would
      c.cur = Taken();
    }
    if (status == LUA_OK) break;  // ran max, or the queue is empty
    if (!handler || status != LUA_ERRRUN ||
        lua_touserdata(L, -1) != static_cast<const void*>(&errh_key)) {
      if (!handler && yielded) running_raised = yielded;
      break;
    }
    lua_pop(L, 1);  // handled
    status = LUA_OK;
    raised_by = nullptr;
  }
  hub->drain_leave();
  c.box->dispatching = outer;
  if (status != LUA_OK) {
    // Unhandled (with a handler, it saw the label already).
    if (!handler && raised_by) label_error(L, raised_by, "decoder");
    if (running_raised) hint_yield(L, running_raised);
    return lua_error(L);
  }
  lua_pushinteger(L, c.ran);
  return 1;
}

// geterrorhandler() -> the handler seterrorhandler set, or nil
int l_geterrorhandler(lua_State* L) {
  check_hub(L);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &errh_key);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  return 1;
}

// seterrorhandler([f]) -> the previous handler, or nil
int l_seterrorhandler(lua_State* L) {
  check_hub(L);
  int t = lua_type(L, 1);
  if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TFUNCTION)
    return luaL_argerror(L, 1,
                         lua_pushfstring(L, "function or nil expected, got %s",
                                         luaL_typename(L, 1)));
  lua_settop(L, 1);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &errh_key);
  lua_insert(L, 1);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &errh_key);
  return 1;
}

// --- the waiting-thread callback ------------------------------------------

struct RetCtx {
  Hub* hub;
  Blocking* item;
  int garbage;
};

// Runs under lua_pcall: calls the client's return callback with the Lua
// arguments on the stack, returns what it pushed.
int ret_tramp(lua_State* L) {
  RetCtx* c = static_cast<RetCtx*>(lua_touserdata(L, 1));
  lua_remove(L, 1);
  int n = c->hub->call_return(c->item, L, c->garbage);
  int top = lua_gettop(L);
  if (n < 0) n = 0;
  if (n > top)
    return luaL_error(L,
                      "darksidesync: return callback returned %d but pushed "
                      "%d value(s)",
                      n, top);
  return n;
}

// Calls b's return callback under lua_pcall (ret_tramp: upvalue 1 of the
// running wt_call / wt_gc) with the nargs values on top of the stack as its
// Lua arguments; leaves what it pushed (up to nresults) or the error.
// Stack: 2 slots above the arguments.
int protected_return(lua_State* L, Hub* hub, Blocking* b, int garbage, int nargs,
                     int nresults) {
  RetCtx c = {hub, b, garbage};
  lua_pushvalue(L, lua_upvalueindex(1));  // ret_tramp
  lua_insert(L, -nargs - 1);
  lua_pushlightuserdata(L, &c);
  lua_insert(L, -nargs - 1);
  return lua_pcall(L, nargs + 1, nresults, 0);
}

// wt(...) -> what the client's return callback pushed; only the first call
// counts, later ones return nothing.
int wt_call(lua_State* L) {
  Wt* w = nullptr;
  // The metatable is upvalue 2: cheaper than luaL_checkudata's lookup by name.
  if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
    if (lua_rawequal(L, -1, lua_upvalueindex(2))) w = static_cast<Wt*>(lua_touserdata(L, 1));
    lua_pop(L, 1);
  }
  if (!w) w = static_cast<Wt*>(luaL_checkudata(L, 1, WT_MT));  // raises
  luaL_checkstack(L, 3, "darksidesync: waiting-thread callback");
  Hub* hub = w->box->hub;
  TicketId t = w->ticket;
  w->ticket = 0;
  if (!hub || !t) return 0;
  // The userdata stays at index 1 (keeping it alive).
  int nargs = lua_gettop(L) - 1;
  void* utilid = nullptr;
  int status = LUA_OK;
  bool answered = hub->answer(t, [&](Blocking* b) {
    utilid = dss::to_utilid(b->id);  // b is gone once answered
    status = protected_return(L, hub, b, 0, nargs, LUA_MULTRET);
  });
  if (!answered) return 0;
  if (status != LUA_OK) {
    label_error(L, utilid, "return callback");
    return lua_error(L);
  }
  return lua_gettop(L) - 1;
}

// Collected uncalled: ret(L, data, utilid, 1); a raised error is dropped
// (there is no caller to hand it to).
int wt_gc(lua_State* L) {
  Wt* w = static_cast<Wt*>(lua_touserdata(L, 1));
  Hub* hub = w->box ? w->box->hub : nullptr;
  TicketId t = w->ticket;
  w->ticket = 0;
  // No stack for the call: the ticket stays, and close, unreg or the
  // producer's timeout end the item.
  if (!hub || !t || !lua_checkstack(L, 2)) return 0;
  hub->answer(t, [&](Blocking* b) {
    if (protected_return(L, hub, b, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  });
  return 0;
}

int wt_tostring(lua_State* L) {
  Wt* w = static_cast<Wt*>(luaL_checkudata(L, 1, WT_MT));
  Hub* hub = w->box->hub;
  bool pending = hub && w->ticket && hub->pending(w->ticket);
  lua_pushfstring(L, "darksidesync waiting-thread callback (%s): %p",
                  pending ? "pending" : "done", static_cast<void*>(w));
  return 1;
}

// --- the rest of the Lua API ------------------------------------------------

int l_queuesize(lua_State* L) {
  Hub* hub = check_box(L, 1);
  lua_pushinteger(L, lua_Integer(hub->size()));
  return 1;
}

int l_getport(lua_State* L) {
  Hub* hub = check_hub(L);
  lua_pushinteger(L, hub->port());
  return 1;
}

int l_setport(lua_State* L) {
  Hub* hub = check_hub(L);
  lua_Integer port = 0;
  if (!dss_numberarg(L, 1))
    return luaL_argerror(
        L, 1,
        lua_pushfstring(L, "port number expected, got %s",
                        lua_isnone(L, 1) ? "no value" : luaL_typename(L, 1)));
  if (!dss_tointegerx(L, 1, &port) || port < 0 || port > 65535)
    return luaL_argerror(L, 1, "port must be an integer from 0 to 65535");
  static const char* const modes[] = {"each", "coalesce", nullptr};
  int mt = lua_type(L, 2);
  if (mt != LUA_TNONE && mt != LUA_TNIL && mt != LUA_TSTRING &&
      mt != LUA_TNUMBER)
    return luaL_argerror(L, 2,
                         lua_pushfstring(L, "string expected, got %s",
                                         luaL_typename(L, 2)));
  int mode = luaL_checkoption(L, 2, "each", modes);
  if (!hub->set_port(int(port), mode == 1))
    return luaL_error(L, "darksidesync: cannot create the UDP socket: %s",
                      std::strerror(errno));
  lua_pushinteger(L, 1);
  return 1;
}

int l_getfd(lua_State* L) {
  Hub* hub = check_hub(L);
  int fd = hub->fd();
  if (fd < 0)
    return luaL_error(L, "darksidesync: cannot create the wake-up fd: %s",
                      std::strerror(errno));
  lua_pushinteger(L, fd);
  return 1;
}

// wait([timeout]) -> queue size, 0 on timeout
int l_wait(lua_State* L) {
  Hub* hub = check_hub(L);
  double timeout = -1;
  if (!lua_isnoneornil(L, 1)) {
    if (!dss_numberarg(L, 1))
      return luaL_argerror(
          L, 1,
          lua_pushfstring(L, "non-negative number of seconds expected, got %s",
                          luaL_typename(L, 1)));
    timeout = double(lua_tonumber(L, 1));
    if (!(timeout >= 0))
      return luaL_argerror(
          L, 1,
          lua_pushfstring(L, "non-negative number of seconds expected, got %f",
                          lua_tonumber(L, 1)));
  }
  unsigned mark = 0;
  int intr = timeout == 0 ? -1 : dss_interrupt::begin(&mark);
  hub->drain_enter();
  std::size_t n = hub->wait(timeout, intr);
  hub->drain_leave();
  if (intr >= 0) dss_interrupt::end(mark);
  lua_pushinteger(L, lua_Integer(n));
  return 1;
}

// monotime() -> seconds from CLOCK_MONOTONIC, a float. Needs no hub: it
// reads the clock only (the fibers scheduler's clock, lua/darksidesync/fibers).
int l_monotime(lua_State* L) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
    return luaL_error(L, "darksidesync: clock_gettime failed: %s",
                      std::strerror(errno));
  lua_pushnumber(L, lua_Number(ts.tv_sec) + lua_Number(ts.tv_nsec) * 1e-9);
  return 1;
}

int l_setmaxqueue(lua_State* L) {
  Hub* hub = check_hub(L);
  hub->set_max(std::size_t(check_count(L, 1)));
  return 0;
}

int l_getmaxqueue(lua_State* L) {
  Hub* hub = check_hub(L);
  lua_pushinteger(L, lua_Integer(hub->max()));
  return 1;
}

int l_stats(lua_State* L) {
  Hub* hub = check_hub(L);
  static const char* const names[] = {
#define DSS_STATS_NAME(name) #name,
      DSS_STATS_LIST(DSS_STATS_NAME)
#undef DSS_STATS_NAME
  };
  constexpr int n = int(sizeof names / sizeof names[0]);
  // The table and its keys first: allocating can run the garbage
  // collector, and a waiting-thread callback it finalizes changes the
  // counters. Past the snapshot, only existing keys are set to integers,
  // which allocates nothing: the counters are those at stats()' return.
  lua_createtable(L, 0, n);
  for (const char* name : names) {
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, name);
  }
  dss::Stats s = hub->stats();
  const std::uint64_t values[n] = {
#define DSS_STATS_VALUE(name) s.name,
      DSS_STATS_LIST(DSS_STATS_VALUE)
#undef DSS_STATS_VALUE
  };
  for (int i = 0; i < n; ++i) {
    lua_pushinteger(L, lua_Integer(values[i]));
    lua_setfield(L, -2, names[i]);
  }
  return 1;
}

// Keeps this shared object mapped for the life of the process: producer
// threads may still be returning through our code, and client libraries
// keep pointers to our API struct, after the last Lua state unloads us.
void pin_module() {
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&hub_of), &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
  });
}

// The metatables of the waiting-thread callbacks and of the closers.
void make_metatables(lua_State* L) {
  if (luaL_newmetatable(L, WT_MT)) {
    lua_pushcfunction(L, ret_tramp);
    lua_pushvalue(L, -2);  // the metatable (wt_call's type check)
    lua_pushcclosure(L, wt_call, 2);
    lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, ret_tramp);
    lua_pushcclosure(L, wt_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, wt_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "darksidesync.waitingthread");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CLOSER_MT)) {
    lua_pushcfunction(L, closer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
}

// Creates this state's hub, metatables and registry entries. May raise
// before the hub exists, never after.
void start(lua_State* L) {
  make_metatables(L);
  // Make room for both registry entries now, so that later writes to them
  // never allocate.
  lua_pushboolean(L, 1);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &hub_key);
  lua_pushboolean(L, 1);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &closer_key);
  lua_createtable(L, kWtBatch, 0);  // the waiting-thread callbacks made ahead
  dss_rawsetp(L, LUA_REGISTRYINDEX, &wts_key);
  lua_newtable(L);  // closers, weak-valued (see closer_gc)
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &closers_key);
  HubBox* box = static_cast<HubBox*>(lua_newuserdata(L, sizeof(HubBox)));
  box->hub = nullptr;
  box->dispatching = nullptr;
  box->wts = 0;
  dss_rawsetp(L, LUA_REGISTRYINDEX, &box_key);

  // The box takes the creation reference. The first closer is made under
  // protection, so that a failed allocation cannot leak the hub.
  Hub* hub = Hub::create();
  if (!hub) {
    luaL_error(L, "darksidesync: out of memory");
    return;
  }
  box->hub = hub;
  hub->lua_thread_here();
  if (dss_cpcall(L, renew_closer, nullptr) != LUA_OK) {
    box->hub = nullptr;
    hub->close();
    hub->unref();
    luaL_error(L, "darksidesync: out of memory");
    return;
  }
  lua_pushlightuserdata(L, hub);
  dss_rawsetp(L, LUA_REGISTRYINDEX, &hub_key);
}

}  // namespace

// The utilid of the binding's own registration `libid` in L's state
// (channel.cpp delivers its fibers' completions through it), registered on
// first use; nullptr when the hub does not run or memory ran out. Never
// raises.
void* dss_own_utilid(lua_State* L, void* libid, DSS_cancel_1v0_t cancel) {
  int err = DSS_SUCCESS;
  void* utilid = api_reg(L, libid, cancel, &err);
  return err == DSS_SUCCESS || err == DSS_ERR_ALREADY_REGISTERED ? utilid : nullptr;
}

// The code list (darksidesync_api.h) agrees with the #defines.
#define DSS_CHECK_CODE(name, value, text) \
  static_assert(name == (value), "DSS_CODE_LIST: " #name " differs from its #define");
DSS_CODE_LIST(DSS_CHECK_CODE)
#undef DSS_CHECK_CODE

dss::Hub* dss_hub_of(lua_State* L) { return hub_of(L); }

void dss_open_poller(lua_State* L);  // poller.cpp
void dss_open_channel(lua_State* L);  // channel.cpp

// registry["DSS.DarkSideSync"] = { Version = ..., ["DSS API 1v0"] = api,
// ["DSS API 2v0"] = ..., ["DSS API 2v1"] = ..., ["DSS API 2v2"] = ... }
static void publish_api(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
  }
  lua_pushliteral(L, DSS_VERSION);
  lua_setfield(L, -2, DSS_VERSION_KEY);
  lua_pushlightuserdata(L, &api_1v0);
  lua_setfield(L, -2, DSS_API_1v0_KEY);
  lua_pushlightuserdata(L, &api_2v0);
  lua_setfield(L, -2, DSS_API_2v0_KEY);
  lua_pushlightuserdata(L, &api_2v1);
  lua_setfield(L, -2, DSS_API_2v1_KEY);
  lua_pushlightuserdata(L, &api_2v2);
  lua_setfield(L, -2, DSS_API_2v2_KEY);
  lua_pop(L, 1);
}

extern "C" int luaopen_darksidesync(lua_State* L) {
  pin_module();
  if (hub_entry(L) == &stopped_mark) return luaL_error(L, "%s", STOPPED_MSG);
  Hub* hub = hub_of(L);
  if (hub && hub->state() != Hub::State::running)
    return luaL_error(L, "%s", STOPPED_MSG);
  if (!hub) start(L);
  publish_api(L);

  lua_newtable(L);
  dss_rawgetp(L, LUA_REGISTRYINDEX, &box_key);  // the HubBox
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, decode_tramp, 1);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_poll, 2);
  lua_setfield(L, -3, "poll");
  lua_pushcfunction(L, dispatch_tramp);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, errh_tramp, 1);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, l_dispatch, 3);
  lua_setfield(L, -3, "dispatch");
  lua_pushcclosure(L, l_queuesize, 1);
  lua_setfield(L, -2, "queuesize");
  const luaL_Reg funcs[] = {{"setport", l_setport},
                            {"getport", l_getport},
                            {"getfd", l_getfd},
                            {"wait", l_wait},
                            {"seterrorhandler", l_seterrorhandler},
                            {"geterrorhandler", l_geterrorhandler},
                            {"setmaxqueue", l_setmaxqueue},
                            {"getmaxqueue", l_getmaxqueue},
                            {"stats", l_stats},
                            {"monotime", l_monotime},
                            {nullptr, nullptr}};
  dss_setfuncs(L, funcs, 0);
  dss_open_poller(L);
  dss_open_channel(L);  // darksidesync.channel builds on it
  lua_setfield(L, -2, "_channel");
  dss_open_session(L);  // darksidesync.session builds on it
  lua_setfield(L, -2, "_session");
  lua_pushliteral(L, DSS_VERSION);
  lua_setfield(L, -2, "_VERSION");
#if DSS_SET_GLOBAL
  lua_pushvalue(L, -1);
  lua_setglobal(L, "darksidesync");
#endif
  return 1;
}
