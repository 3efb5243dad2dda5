// poller.cpp -- the Lua face of dss::Poller (src/core/poller.hpp):
// darksidesync.poller([backend]) and its methods. The fiber scheduler's
// darksidesync.fibers.pollio sleeps in one of these, with the hub's fd
// among its fds and the next timer as the timeout. See docs/api.md.
#include <cerrno>
#include <cstring>
#include <new>

#include "compat.h"
#include "interrupt.hpp"
#include "poller.hpp"

namespace {

const char* const kMeta = "darksidesync.poller";

struct PollerUd {
  bool open;
  int intr;  // the interrupt pipe, once added (see interrupt.cpp); else -1
  alignas(dss::Poller) unsigned char mem[sizeof(dss::Poller)];
  dss::Poller* get() { return reinterpret_cast<dss::Poller*>(mem); }
};

PollerUd* check_ud(lua_State* L) {
  return static_cast<PollerUd*>(luaL_checkudata(L, 1, kMeta));
}

dss::Poller* check_open(lua_State* L) {
  PollerUd* ud = check_ud(L);
  if (!ud->open) luaL_error(L, "darksidesync.poller: the poller is closed");
  return ud->get();
}

// nil, message, errno: the io library's convention for a failed call.
int fail(lua_State* L, const char* what, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "darksidesync.poller: %s: %s", what, std::strerror(err));
  lua_pushinteger(L, err);
  return 3;
}

int check_fd(lua_State* L, int arg) {
  lua_Integer fd = 0;
  if (!dss_numberarg(L, arg) || !dss_tointegerx(L, arg, &fd))
    return luaL_argerror(L, arg, "fd (an integer) expected");
  if (fd < 0 || fd > 0x7fffffff) return luaL_argerror(L, arg, "fd out of range");
  return int(fd);
}

// poller([backend]) -> poller | nil, message, errno. backend: "epoll",
// "poll", or nil for epoll where the system has it.
int l_new(lua_State* L) {
  const char* names[] = {"auto", "epoll", "poll", nullptr};
  int b = luaL_checkoption(L, 1, "auto", names);
  auto* ud = static_cast<PollerUd*>(lua_newuserdata(L, sizeof(PollerUd)));
  ud->open = false;
  ud->intr = -1;
  luaL_getmetatable(L, kMeta);
  lua_setmetatable(L, -2);
  new (ud->mem) dss::Poller(b == 1   ? dss::Poller::Backend::Epoll
                            : b == 2 ? dss::Poller::Backend::Poll
                                     : dss::Poller::Backend::Auto);
  ud->open = true;
  if (int err = ud->get()->error()) {
    ud->get()->~Poller();
    ud->open = false;
    return fail(L, "epoll_create1", err);
  }
  return 1;
}

const unsigned kInterests =
    dss::Poller::kIn | dss::Poller::kOut | dss::Poller::kPri | dss::Poller::kRdHup;

// add and set: (fd, events [, oneshot]) -> true | nil, message, errno. set
// replaces the interest; set with events 0 forgets the fd.
int add_or_set(lua_State* L, bool replace) {
  dss::Poller* p = check_open(L);
  int fd = check_fd(L, 2);
  lua_Integer ev = 0;
  if (!dss_numberarg(L, 3) || !dss_tointegerx(L, 3, &ev) || ev < 0 ||
      (ev == 0 && !replace) || (ev != 0 && (unsigned(ev) & kInterests) == 0))
    return luaL_argerror(L, 3, "events (a mask of IN, OUT, PRI, RDHUP) expected");
  bool oneshot = lua_isnoneornil(L, 4) ? true : lua_toboolean(L, 4) != 0;
  if (ev == 0) {
    p->del(fd);
  } else if (int err = replace ? p->set(fd, unsigned(ev), oneshot)
                               : p->add(fd, unsigned(ev), oneshot)) {
    return fail(L, replace ? "set" : "add", err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

// p:add(fd, events [, oneshot]) -> true | nil, message, errno
int l_add(lua_State* L) { return add_or_set(L, false); }

// p:set(fd, events [, oneshot]) -> true | nil, message, errno
int l_set(lua_State* L) { return add_or_set(L, true); }

// p:del(fd) -> true | nil, message, errno (ENOENT: fd was not added)
int l_del(lua_State* L) {
  dss::Poller* p = check_open(L);
  int fd = check_fd(L, 2);
  if (int err = p->del(fd)) return fail(L, "del", err);
  lua_pushboolean(L, 1);
  return 1;
}

// p:wait([timeout [, out]]) -> n, out: out[2i-1] is an fd, out[2i] its
// events, for i = 1..n (entries past 2n are left as they were). timeout in
// seconds; nil or negative: no limit. 0 events on timeout or a signal.
int l_wait(lua_State* L) {
  dss::Poller* p = check_open(L);
  double timeout = -1;
  if (!lua_isnoneornil(L, 2)) {
    if (!dss_numberarg(L, 2)) return luaL_argerror(L, 2, "timeout (seconds) expected");
    timeout = double(lua_tonumber(L, 2));
  }
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
  }
  // Ctrl-C under the stock interpreter ends the sleep (interrupt.cpp): the
  // interrupt pipe joins the fds, persistently, and is never reported.
  PollerUd* ud = check_ud(L);
  unsigned mark = 0;
  int intr = timeout == 0 ? -1 : dss_interrupt::begin(&mark);
  if (intr >= 0 && ud->intr != intr && p->add(intr, dss::Poller::kIn, false) == 0)
    ud->intr = intr;
  int n = p->wait(timeout);
  if (intr >= 0) dss_interrupt::end(mark);
  if (n < 0) return fail(L, "wait", -n);
  // The events live in the poller (no local owns memory across the
  // raising calls below).
  int k = 0;
  for (int i = 0; i < n; ++i) {
    const dss::Poller::Event& e = p->events()[std::size_t(i)];
    if (e.fd == ud->intr) continue;
    lua_pushinteger(L, e.fd);
    lua_rawseti(L, 3, 2 * k + 1);
    lua_pushinteger(L, lua_Integer(e.events));
    lua_rawseti(L, 3, 2 * k + 2);
    ++k;
  }
  lua_pushinteger(L, k);
  lua_insert(L, 3);
  return 2;
}

// p:armed() -> the number of fds with an interest waiting to fire
int l_armed(lua_State* L) {
  std::size_t n = check_open(L)->armed();
  if (check_ud(L)->intr >= 0 && n > 0) --n;  // the interrupt pipe's, always there
  lua_pushinteger(L, lua_Integer(n));
  return 1;
}

// p:backend() -> "epoll" | "poll"
int l_backend(lua_State* L) {
  lua_pushstring(L, check_open(L)->backend());
  return 1;
}

// p:getfd() -> the epoll set's fd (readable while an armed fd is ready;
// for a loop that watches fds, or a session that parks), or nil for the
// poll backend.
int l_getfd(lua_State* L) {
  int fd = check_open(L)->epoll_fd();
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

// p:close(): releases the poller (idempotent); __gc does the same.
int l_close(lua_State* L) {
  PollerUd* ud = check_ud(L);
  if (ud->open) {
    ud->open = false;
    ud->get()->~Poller();
  }
  return 0;
}

int l_tostring(lua_State* L) {
  PollerUd* ud = check_ud(L);
  if (ud->open)
    lua_pushfstring(L, "darksidesync.poller (%s, %p)", ud->get()->backend(),
                    static_cast<void*>(ud));
  else
    lua_pushfstring(L, "darksidesync.poller (closed, %p)", static_cast<void*>(ud));
  return 1;
}

}  // namespace

// Sets t.poller and t.POLL (the event bits) on the table at the top of
// the stack.
void dss_open_poller(lua_State* L) {
  if (luaL_newmetatable(L, kMeta)) {
    const luaL_Reg methods[] = {{"add", l_add},         {"set", l_set},
                                {"del", l_del},
                                {"wait", l_wait},       {"armed", l_armed},
                                {"backend", l_backend}, {"close", l_close},
                                {"getfd", l_getfd},     {nullptr, nullptr}};
    lua_newtable(L);
    dss_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "poller");
  lua_newtable(L);
  const struct {
    const char* name;
    unsigned bit;
  } bits[] = {{"IN", dss::Poller::kIn},   {"PRI", dss::Poller::kPri},
              {"OUT", dss::Poller::kOut}, {"ERR", dss::Poller::kErr},
              {"HUP", dss::Poller::kHup}, {"RDHUP", dss::Poller::kRdHup}};
  for (const auto& b : bits) {
    lua_pushinteger(L, lua_Integer(b.bit));
    lua_setfield(L, -2, b.name);
  }
  lua_setfield(L, -2, "POLL");
}
