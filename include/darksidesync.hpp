/*
 * darksidesync.hpp -- a C++17 helper for DarkSideSync client libraries.
 *
 * Header only, built on the C ABI alone (darksidesync_api.h, "DSS API 2v0",
 * found through registry["DSS.DarkSideSync"]["DSS API 2v0"]): a library
 * using it never links against darksidesync. See docs/cpp-api.md.
 *
 *   struct my_lib { dss::client dss; ... };        // one per Lua state
 *
 *   int luaopen_mylib(lua_State *L) {
 *     my_lib *m = ...;                   // owned by a userdata's __gc
 *     m->dss.open(L);                    // raises a Lua error on failure
 *     ...
 *   }
 *   // any thread, fire and forget: f(L) pushes a Lua function and its
 *   // arguments and returns their count
 *   int rc = m->dss.post([v = std::move(v)](lua_State *L) {
 *     lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
 *     lua_pushinteger(L, v);
 *     return 2;
 *   });
 *   // any thread but the Lua one, blocking until Lua answers (the Lua
 *   // function gets the waiting-thread callback first; calling it with
 *   // values hands them to read):
 *   bool yes = false;
 *   rc = m->dss.call([&](lua_State *L) { ...push...; return n; },
 *                    [&](lua_State *L, int nargs) {
 *                      yes = nargs > 0 && lua_toboolean(L, 1);
 *                    },
 *                    1000);   -- at most a second (DSS_ERR_TIMEOUT)
 *
 * Rules the helper keeps, and asks of its users:
 * - No C++ exception crosses into C or Lua: every callback darksidesync
 *   calls catches what post's functor, call's push and read throw (a
 *   throwing push or functor ends the item as a decoder returning 0; a
 *   throwing read ends it as a read that returned nothing). The exception
 *   is dropped: handle it in your functor if it matters.
 * - Lua errors are longjmps (PUC Lua) or foreign exceptions (LuaJIT, which
 *   the helper lets through). With PUC Lua, a Lua error raised inside your
 *   functor skips the destructors of the C++ objects of that functor's
 *   frame: keep no object with a destructor alive across a Lua call that
 *   may raise. The helper's own frames hold none (post's functor is freed
 *   even then).
 * - client::open is the only function of the helper that raises a Lua
 *   error on purpose; call it on the Lua thread, from a frame that holds no
 *   C++ object with a destructor.
 */
#ifndef darksidesync_hpp
#define darksidesync_hpp

#include "darksidesync_api.h"

extern "C" {
#include <lauxlib.h>
}

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#if defined(__GNUC__) && !defined(_WIN32)
/* Hidden: one copy of the helper's code and globals per client library,
 * never shared with (nor interposed by) another library that includes this
 * header, maybe another version of it. Put on functions, not on the class,
 * so that your own types may hold a dss::client without a warning. */
#define DSS_HPP_LOCAL __attribute__((visibility("hidden")))
#else
#define DSS_HPP_LOCAL
#endif

namespace dss {

/* The name of a DSS code ("DSS_ERR_TIMEOUT"), or "unknown DSS code". */
DSS_HPP_LOCAL inline const char *code_name(int code) noexcept {
  switch (code) {
#define DSS_HPP_CODE_NAME(name, value, text) \
  case value:                                \
    return #name;
    DSS_CODE_LIST(DSS_HPP_CODE_NAME)
#undef DSS_HPP_CODE_NAME
    default:
      return "unknown DSS code";
  }
}

/* The 2v0 API struct of L's state, or nullptr when darksidesync was not
 * required there (or offers no 2v0). Call on L's thread. Raises only Lua's
 * own memory error. */
DSS_HPP_LOCAL inline const DSS_api_2v0_t *find_api(lua_State *L) {
  const DSS_api_2v0_t *api = nullptr;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME); /* dss table */
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v0_KEY); /* dss table, api */
    if (lua_islightuserdata(L, -1)) {
      api = static_cast<const DSS_api_2v0_t *>(lua_touserdata(L, -1));
      if (api->version == nullptr ||
          std::strcmp(api->version, DSS_API_2v0_KEY) != 0)
        api = nullptr;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return api;
}

class client;

namespace detail DSS_HPP_LOCAL {

/* Inside a catch (...): lets a foreign exception (a LuaJIT error unwinding
 * through our frame) go on; a C++ exception stops here. */
inline void rethrow_foreign() {
  if (!std::current_exception()) throw;
}

/* Every open client of this library, so that the cancel callback (which
 * only gets a utilid) finds its own. Never destroyed: a client may be
 * closed from code that runs after static destructors. */
struct registry {
  std::mutex mu;
  std::condition_variable cv; /* a cancel callback finished */
  client *head = nullptr;
  const DSS_api_2v0_t *api = nullptr; /* for a cancel of an unknown id */
};

inline registry &regs() noexcept {
  alignas(registry) static unsigned char buf[sizeof(registry)];
  static registry *r = new (buf) registry();
  return *r;
}

/* post(): the functor on the heap, run by its decoder under our own
 * lua_pcall so that it is freed even when it raises a Lua error. */
struct thunk {
  int (*invoke)(lua_State *L, void *fn);
  void *fn;
};

/* lua_CFunction run under lua_pcall: arg 1 is a thunk. */
inline int run_thunk(lua_State *L) {
  thunk *t = static_cast<thunk *>(lua_touserdata(L, 1));
  return t->invoke(L, t->fn);
}

#if LUA_VERSION_NUM < 502
inline char *runner_key() noexcept {
  static char key;
  return &key;
}

/* Under lua_cpcall: registry[runner_key] = run_thunk. */
inline int make_runner(lua_State *L) {
  lua_pushlightuserdata(L, runner_key());
  lua_pushcfunction(L, run_thunk);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}
#endif

/* Pushes run_thunk without raising; false (nothing pushed) when Lua is out
 * of memory. 5.1 and LuaJIT allocate a closure per C function pushed: make
 * it once per state, protected, and keep it in the registry. */
inline bool push_runner(lua_State *L) {
#if LUA_VERSION_NUM >= 502
  lua_pushcfunction(L, run_thunk); /* a light C function: no allocation */
  return true;
#else
  for (int pass = 0; pass < 2; ++pass) {
    lua_pushlightuserdata(L, runner_key());
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isfunction(L, -1)) return true;
    lua_pop(L, 1);
    if (pass == 0 && lua_cpcall(L, make_runner, nullptr) != 0) {
      lua_pop(L, 1); /* the error object */
      return false;
    }
  }
  return false;
#endif
}

template <class Fn>
struct posted {
  /* Runs the functor (under run_thunk): its count, or 0 to end the item. */
  static int invoke(lua_State *L, void *p) {
    int top = lua_gettop(L);
    int n;
    try {
      n = (*static_cast<Fn *>(p))(L);
    } catch (...) {
      rethrow_foreign();
      n = 0;
    }
    if (n <= 0) return 0;
    if (n > lua_gettop(L) - top)
      return luaL_error(L, "dss::client::post: the functor returned %d but "
                           "pushed %d value(s)", n, lua_gettop(L) - top);
    return n;
  }

  /* DSS_decoder_1v0_t. L == NULL: cancelled, destroy without running. */
  static int decode(lua_State *L, void *p, void *) {
    Fn *fn = static_cast<Fn *>(p);
    if (L == nullptr) {
      delete fn;
      return 0;
    }
    int base = lua_gettop(L);
    if (!push_runner(L)) {
      delete fn;
      return 0;
    }
    thunk t = {&invoke, fn};
    lua_pushlightuserdata(L, &t);
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    delete fn;
    if (status != 0) return lua_error(L); /* the item has ended: re-raise */
    return lua_gettop(L) - base;
  }
};

/* call(): everything on the caller's stack; deliver2 returns only when
 * nothing touches it any more. */
template <class Push, class Read>
struct call_frame {
  Push *push;
  Read *read;

  static int decode(lua_State *L, void *p, void *) {
    if (L == nullptr) return 0; /* cancelled, or the caller's timeout */
    call_frame *f = static_cast<call_frame *>(p);
    int top = lua_gettop(L);
    int n;
    try {
      n = (*f->push)(L);
    } catch (...) {
      rethrow_foreign();
      n = 0;
    }
    if (n <= 0) {
      lua_settop(L, top);
      return 0;
    }
    return n;
  }

  static int ret(lua_State *L, void *p, void *, int garbage) {
    if (L == nullptr || garbage) return 0; /* no answer to read */
    call_frame *f = static_cast<call_frame *>(p);
    int nargs = lua_gettop(L);
    int n;
    try {
      if constexpr (std::is_void_v<
                        std::invoke_result_t<Read &, lua_State *, int>>) {
        (*f->read)(L, nargs);
        n = 0;
      } else {
        n = static_cast<int>((*f->read)(L, nargs));
      }
    } catch (...) {
      rethrow_foreign();
      n = -1;
    }
    if (n < 0) {
      lua_settop(L, nargs);
      return 0;
    }
    return n;
  }
};

}  // namespace detail

/*
 * A registration of this library with one Lua state, and the way to hand
 * that state work from any thread. Not copyable nor movable: its address is
 * its darksidesync library id (so every client object is a library of its
 * own) and the cancel callback finds it by it.
 *
 * Lifetime: open() registers; close() or the destructor unregisters, which
 * cancels every item still queued or waiting for Lua (post's functors are
 * destroyed unrun, call()s return DSS_ERR_CANCELLED). When the Lua state
 * closes first, darksidesync cancels the items and calls our cancel
 * callback: the client is unregistered, then the hook given to the
 * constructor runs; later post()/call() return DSS_ERR_NOT_STARTED and the
 * destructor only does the bookkeeping.
 */
class client {
 public:
  /* hook: called once when the Lua state closes while the client is open,
   * on the thread closing it, after the client was unregistered (every item
   * of it ended, every blocked call() released). No Lua there. Typical use:
   * stop and join your threads. It may call close(); what it throws is
   * dropped. */
  DSS_HPP_LOCAL client() noexcept = default;
  DSS_HPP_LOCAL explicit client(std::function<void()> hook) noexcept
      : hook_(std::move(hook)) {}
  client(const client &) = delete;
  client &operator=(const client &) = delete;

  /* Unregisters (as close()). If the cancel callback is running the hook
   * on another thread, waits for it to return first. */
  DSS_HPP_LOCAL ~client() {
    detail::registry &g = detail::regs();
    {
      std::unique_lock<std::mutex> lk(g.mu);
      if (cancel_gone_ != nullptr) {
        if (cancel_thread_ == std::this_thread::get_id())
          *cancel_gone_ = true; /* destroyed from the hook itself */
        else
          g.cv.wait(lk, [this] { return cancel_gone_ == nullptr; });
      }
      unlink_locked();
    }
    unregister();
  }

  /* Registers with L's state; call on L's thread (luaopen). Returns
   * DSS_SUCCESS; DSS_ERR_ALREADY_REGISTERED when already open (nothing
   * done); DSS_ERR_NOT_STARTED when darksidesync was not required in L (or
   * does not offer API 2v0) or the state is closing;
   * DSS_ERR_OUT_OF_MEMORY. Raises only Lua's own memory error. */
  DSS_HPP_LOCAL int try_open(lua_State *L) {
    if (uid_.load(std::memory_order_acquire) != nullptr)
      return DSS_ERR_ALREADY_REGISTERED;
    const DSS_api_2v0_t *api = find_api(L);
    if (api == nullptr) return DSS_ERR_NOT_STARTED;
    detail::registry &g = detail::regs();
    {
      std::lock_guard<std::mutex> lk(g.mu);
      g.api = api;
      link_locked();
    }
    int err = DSS_SUCCESS;
    void *uid = api->reg(L, this, &client::cancel_cb, &err);
    if (uid == nullptr) {
      std::lock_guard<std::mutex> lk(g.mu);
      unlink_locked();
      return err == DSS_SUCCESS ? DSS_ERR_NOT_STARTED : err;
    }
    api_.store(api, std::memory_order_release);
    uid_.store(uid, std::memory_order_release);
    return DSS_SUCCESS;
  }

  /* As try_open, but raises a Lua error with a clear message on failure
   * (already open is no failure). The one function of the helper that
   * raises: call it where a Lua error may be raised. */
  DSS_HPP_LOCAL void open(lua_State *L) {
    int rc = try_open(L);
    if (rc == DSS_SUCCESS || rc == DSS_ERR_ALREADY_REGISTERED) return;
    raise_open_error(L, rc);
  }

  /* Unregisters; idempotent, any thread, never throws. Every item still
   * queued or waiting for Lua is cancelled before it returns. The client
   * may be opened again. */
  DSS_HPP_LOCAL void close() noexcept {
    {
      detail::registry &g = detail::regs();
      std::lock_guard<std::mutex> lk(g.mu);
      unlink_locked();
    }
    unregister();
  }

  DSS_HPP_LOCAL bool is_open() const noexcept {
    return uid_.load(std::memory_order_acquire) != nullptr;
  }

  /* The darksidesync utilid, or nullptr when not open. */
  DSS_HPP_LOCAL void *utilid() const noexcept {
    return uid_.load(std::memory_order_acquire);
  }

  /* Items of this client queued now, or a negative DSS code. */
  DSS_HPP_LOCAL long queued() const noexcept {
    void *uid = uid_.load(std::memory_order_acquire);
    const DSS_api_2v0_t *api = api_.load(std::memory_order_acquire);
    if (uid == nullptr || api == nullptr) return DSS_ERR_NOT_STARTED;
    return api->queued(uid);
  }

  /*
   * Fire and forget, from any thread. f is moved (or copied) to the heap;
   * when Lua polls the item, f(L) runs on the Lua thread: it pushes the Lua
   * function to call and its arguments and returns their count (0 ends
   * the item with no call). Then f is destroyed. Cancelled before that
   * (close, the state closing) or not queued (an error code), f is
   * destroyed without running, by then on whatever thread did it.
   *
   * timeout_ms and flags are deliver2's: they only matter when the queue is
   * bounded (setmaxqueue) and full. Returns DSS_SUCCESS (or the warning
   * DSS_ERR_UDP_SEND_FAILED: queued all the same); DSS_ERR_NOT_STARTED when
   * not open or after the state closed; DSS_ERR_INVALID_UTILID,
   * DSS_ERR_OUT_OF_MEMORY (std::bad_alloc making the copy included),
   * DSS_ERR_QUEUE_FULL, DSS_ERR_TIMEOUT, DSS_ERR_WOULD_DEADLOCK (waiting for
   * room on the Lua thread itself), DSS_ERR_INVALID_ARGUMENT: nothing
   * queued. Throws only what F's constructor throws other than
   * std::bad_alloc.
   */
  template <class F>
  DSS_HPP_LOCAL int post(F &&f, long timeout_ms = DSS_TIMEOUT_INFINITE,
                         unsigned int flags = 0) {
    using Fn = std::decay_t<F>;
    static_assert(std::is_invocable_r_v<int, Fn &, lua_State *>,
                  "post(f): f(lua_State*) must return the number of values "
                  "it pushed");
    void *uid = uid_.load(std::memory_order_acquire);
    const DSS_api_2v0_t *api = api_.load(std::memory_order_acquire);
    if (uid == nullptr || api == nullptr) return DSS_ERR_NOT_STARTED;
    Fn *fn;
    try {
      fn = new Fn(std::forward<F>(f));
    } catch (const std::bad_alloc &) {
      return DSS_ERR_OUT_OF_MEMORY;
    }
    int rc = api->deliver2(uid, &detail::posted<Fn>::decode, nullptr, fn,
                           flags, timeout_ms);
    if (rc < DSS_SUCCESS) delete fn; /* not queued: still ours */
    return rc;
  }

  /*
   * A blocking question to Lua, from any thread but the Lua one (there it
   * returns DSS_ERR_WOULD_DEADLOCK). When Lua polls it, push(L) runs on the
   * Lua thread: it pushes the Lua function and its arguments and returns
   * their count (0: no question after all; call returns DSS_SUCCESS
   * without read). darksidesync hands the function the waiting-thread
   * callback as its first argument; when Lua calls that, read(L, nargs)
   * runs on the Lua thread with the values Lua passed at 1..nargs; what it
   * pushes and returns (an int count; void: nothing) is what the
   * waiting-thread callback returns. Then call returns DSS_SUCCESS.
   *
   * read does not run when the waiting-thread callback is collected
   * uncalled (DSS_SUCCESS), on cancellation (DSS_ERR_CANCELLED) nor on a
   * timeout (DSS_ERR_TIMEOUT): initialise the answer to what "no answer"
   * means. Other codes as post's (DSS_ERR_NOT_STARTED when not open). push
   * and read are taken by reference and live on the caller's stack: when
   * call returns, darksidesync no longer touches them, whatever the code.
   */
  template <class Push, class Read>
  DSS_HPP_LOCAL int call(Push &&push, Read &&read,
                         long timeout_ms = DSS_TIMEOUT_INFINITE,
                         unsigned int flags = 0) noexcept {
    using P = std::remove_reference_t<Push>;
    using R = std::remove_reference_t<Read>;
    static_assert(std::is_invocable_r_v<int, P &, lua_State *>,
                  "call(push, read): push(lua_State*) must return the number "
                  "of values it pushed");
    static_assert(std::is_invocable_v<R &, lua_State *, int>,
                  "call(push, read): read(lua_State*, int nargs) must be "
                  "callable");
    void *uid = uid_.load(std::memory_order_acquire);
    const DSS_api_2v0_t *api = api_.load(std::memory_order_acquire);
    if (uid == nullptr || api == nullptr) return DSS_ERR_NOT_STARTED;
    detail::call_frame<P, R> frame = {&push, &read};
    return api->deliver2(uid, &detail::call_frame<P, R>::decode,
                         &detail::call_frame<P, R>::ret, &frame, flags,
                         timeout_ms);
  }

 private:
  /* Forgets the registration and unregisters it (cancelling its items). */
  DSS_HPP_LOCAL void unregister() noexcept {
    void *uid = uid_.exchange(nullptr, std::memory_order_acq_rel);
    const DSS_api_2v0_t *api = api_.load(std::memory_order_acquire);
    if (uid != nullptr && api != nullptr) api->unreg(uid);
  }

  DSS_HPP_LOCAL void link_locked() noexcept {
    if (linked_) return;
    detail::registry &g = detail::regs();
    prev_ = nullptr;
    next_ = g.head;
    if (g.head != nullptr) g.head->prev_ = this;
    g.head = this;
    linked_ = true;
  }

  DSS_HPP_LOCAL void unlink_locked() noexcept {
    if (!linked_) return;
    detail::registry &g = detail::regs();
    if (prev_ != nullptr) prev_->next_ = next_;
    else g.head = next_;
    if (next_ != nullptr) next_->prev_ = prev_;
    prev_ = next_ = nullptr;
    linked_ = false;
  }

  /* DSS_cancel_1v0_t: the Lua state of uid is closing (its items are
   * already cancelled, deliveries refused). Called from C: throws nothing. */
  DSS_HPP_LOCAL static void cancel_cb(void *uid) noexcept {
    detail::registry &g = detail::regs();
    client *c = nullptr;
    bool gone = false;
    const DSS_api_2v0_t *api;
    {
      std::lock_guard<std::mutex> lk(g.mu);
      api = g.api;
      for (client *p = g.head; p != nullptr; p = p->next_) {
        if (p->uid_.load(std::memory_order_acquire) == uid) {
          c = p;
          break;
        }
      }
      if (c != nullptr) {
        c->cancel_gone_ = &gone;
        c->cancel_thread_ = std::this_thread::get_id();
      }
    }
    if (c == nullptr) { /* closed meanwhile: make sure it is unregistered */
      if (api != nullptr) api->unreg(uid);
      return;
    }
    c->unregister();
    if (c->hook_) {
      try {
        c->hook_();
      } catch (...) {
      }
    }
    std::lock_guard<std::mutex> lk(g.mu);
    if (!gone) {
      c->cancel_gone_ = nullptr;
      if (c->uid_.load(std::memory_order_acquire) == nullptr)
        c->unlink_locked();
    }
    g.cv.notify_all();
  }

  /* Raises the Lua error of a failed open; nothing with a destructor is
   * alive in this frame. */
  [[noreturn]] DSS_HPP_LOCAL static void raise_open_error(lua_State *L,
                                                         int rc) {
    if (rc == DSS_ERR_NOT_STARTED) {
      lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME);
      if (!lua_istable(L, -1))
        luaL_error(L, "DarkSideSync API not found: require 'darksidesync' "
                      "before loading this library");
      lua_getfield(L, -1, DSS_API_2v0_KEY);
      if (!lua_islightuserdata(L, -1)) {
        lua_getfield(L, -2, DSS_VERSION_KEY);
        luaL_error(L, "the loaded darksidesync (version '%s') does not "
                      "offer '%s'",
                   lua_isstring(L, -1) ? lua_tostring(L, -1) : "unknown",
                   DSS_API_2v0_KEY);
      }
      luaL_error(L, "darksidesync is not running in this Lua state");
    }
    if (rc == DSS_ERR_OUT_OF_MEMORY)
      luaL_error(L, "out of memory registering with darksidesync");
    luaL_error(L, "registering with darksidesync failed (%s)",
               code_name(rc));
    std::terminate(); /* luaL_error does not return */
  }

  std::atomic<void *> uid_{nullptr};
  std::atomic<const DSS_api_2v0_t *> api_{nullptr};
  std::function<void()> hook_;
  /* Under detail::regs().mu. */
  client *prev_ = nullptr;
  client *next_ = nullptr;
  bool linked_ = false;
  bool *cancel_gone_ = nullptr; /* set while cancel_cb runs the hook */
  std::thread::id cancel_thread_;
};

/* ------------------------------------------------------------------------
 * Channels fed from your threads (API 2v2, darksidesync 2.2; see
 * docs/c-api.md "API 2v2"): a reference to a Lua channel that any thread
 * puts values into, as one message per put.
 *
 *   dss::channel_ref ch = dss::channel_ref::retain(L, 1);   // Lua thread
 *   if (!ch) return luaL_argerror(L, 1, "darksidesync.channel expected");
 *   std::thread([ch = std::move(ch)] {
 *     ch.put("temp", 21.5);          // any thread; blocks while full
 *   }).detach();
 * --------------------------------------------------------------------- */

/* The 2v2 API struct of L's state, or nullptr (darksidesync not required
 * there, or older than 2.2). Call on L's thread. */
DSS_HPP_LOCAL inline const DSS_api_2v2_t *find_api_2v2(lua_State *L) {
  const DSS_api_2v2_t *api = nullptr;
  lua_getfield(L, LUA_REGISTRYINDEX, DSS_REGISTRY_NAME); /* dss table */
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, DSS_API_2v2_KEY); /* dss table, api */
    if (lua_islightuserdata(L, -1)) {
      api = static_cast<const DSS_api_2v2_t *>(lua_touserdata(L, -1));
      if (api->version == nullptr ||
          std::strcmp(api->version, DSS_API_2v2_KEY) != 0)
        api = nullptr;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return api;
}

namespace detail DSS_HPP_LOCAL {
/* A C++ value as a DSS_value_t: nullptr (nil), bool, any other integral
 * type (an integer), a floating type (a number), and strings (const char*,
 * std::string, std::string_view: the bytes, not copied here -- channel_put
 * copies them). */
inline DSS_value_t to_value(std::nullptr_t) noexcept { return DSS_vnil(); }
inline DSS_value_t to_value(bool b) noexcept { return DSS_vboolean(b ? 1 : 0); }
inline DSS_value_t to_value(const char *s) noexcept { return DSS_vstring(s); }
inline DSS_value_t to_value(std::string_view s) noexcept {
  return DSS_vlstring(s.data(), s.size());
}
inline DSS_value_t to_value(const std::string &s) noexcept {
  return DSS_vlstring(s.data(), s.size());
}
template <class T, typename std::enable_if<std::is_integral<T>::value &&
                                               !std::is_same<T, bool>::value,
                                           int>::type = 0>
inline DSS_value_t to_value(T i) noexcept {
  return DSS_vinteger(static_cast<long long>(i));
}
template <class T, typename std::enable_if<std::is_floating_point<T>::value,
                                           int>::type = 0>
inline DSS_value_t to_value(T x) noexcept {
  return DSS_vnumber(static_cast<double>(x));
}
}  // namespace detail

class channel_ref {
 public:
  channel_ref() noexcept = default;
  /* The channel handle at stack index idx, on L's thread; never raises.
   * Empty (false) when the value is not a channel handle or darksidesync
   * offers no 2v2; *err (if given) says which: DSS_ERR_INVALID_ARGUMENT or
   * DSS_ERR_NOT_STARTED. */
  DSS_HPP_LOCAL static channel_ref retain(lua_State *L, int idx,
                                          int *err = nullptr) {
    channel_ref r;
    int e = DSS_ERR_NOT_STARTED;
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    const DSS_api_2v2_t *api = find_api_2v2(L);
    if (api) {
      r.ch_ = api->channel_retain(L, idx, &e);
      if (r.ch_) r.api_ = api;
    }
    if (err) *err = e;
    return r;
  }
  channel_ref(channel_ref &&o) noexcept : api_(o.api_), ch_(o.ch_) {
    o.api_ = nullptr;
    o.ch_ = nullptr;
  }
  channel_ref &operator=(channel_ref &&o) noexcept {
    if (this != &o) {
      reset();
      std::swap(api_, o.api_);
      std::swap(ch_, o.ch_);
    }
    return *this;
  }
  channel_ref(const channel_ref &) = delete;
  channel_ref &operator=(const channel_ref &) = delete;
  ~channel_ref() { reset(); }

  explicit operator bool() const noexcept { return ch_ != nullptr; }

  /* Any thread: the values as one message (a get returns them all),
   * waiting while the channel is full. The codes of channel_put;
   * DSS_ERR_INVALID_ARGUMENT on an empty reference. */
  template <class... T>
  int put(const T &...v) const noexcept {
    return put_with(0u, DSS_TIMEOUT_INFINITE, v...);
  }
  /* As put, waiting at most timeout_ms (DSS_ERR_TIMEOUT). */
  template <class... T>
  int put_for(long timeout_ms, const T &...v) const noexcept {
    return put_with(0u, timeout_ms, v...);
  }
  /* As put, never waiting (DSS_ERR_QUEUE_FULL). */
  template <class... T>
  int try_put(const T &...v) const noexcept {
    return put_with(DSS_DELIVER_NOWAIT, 0, v...);
  }
  /* Any thread: closes the channel (the reference stays). */
  int close() const noexcept {
    return api_ ? api_->channel_close(ch_) : DSS_ERR_INVALID_ARGUMENT;
  }
  /* Drops the reference (the channel is not closed). */
  void reset() noexcept {
    if (api_) api_->channel_release(ch_);
    api_ = nullptr;
    ch_ = nullptr;
  }

 private:
  template <class... T>
  int put_with(unsigned flags, long timeout_ms, const T &...v) const noexcept {
    static_assert(sizeof...(T) >= 1 && sizeof...(T) <= DSS_CHANNEL_MAX_VALUES,
                  "a message has 1 to DSS_CHANNEL_MAX_VALUES values");
    if (!api_) return DSS_ERR_INVALID_ARGUMENT;
    const DSS_value_t values[] = {detail::to_value(v)...};
    return api_->channel_put(ch_, values, int(sizeof...(T)), flags, timeout_ms);
  }

  const DSS_api_2v2_t *api_ = nullptr;
  void *ch_ = nullptr;
};

}  // namespace dss

#endif /* darksidesync_hpp */
