// thread_put.hpp -- a put into a channel from a thread that is neither a
// Lua state's nor a fiber's: a C library's own thread (the 2v2 channel
// API). It tries at once; when the channel is full it may wait, sleeping
// on the calling thread until a get takes its message, the channel
// closes, or its deadline passes (then it withdraws the message: nothing
// is sent).
#ifndef DSS_CORE_THREAD_PUT_HPP
#define DSS_CORE_THREAD_PUT_HPP

#include "channel.hpp"
#include "clock.hpp"

namespace dss {

enum class ThreadPut {
  done,     // buffered, or taken by a get: m moved into the channel
  closed,   // the channel is closed (or closed while waiting)
  full,     // it would wait, and timeout_ms is 0
  timeout,  // still not taken when timeout_ms passed; withdrawn
  nomem,
};

// Waits on the calling thread for w's operation on ch (w->put: a put, its
// message in w->msg; else a get), sleeping until another party completes
// it, the channel closes, or the deadline passes (timed): then the
// operation is withdrawn, unless it completed first. Returns how it ended:
// done (a get's message moved into *got, when given), closed, cancelled
// (the deadline), or none when registering ran out of memory. Every
// thread that waits for a channel outside a fiber (a C library's thread, a
// main state's plain put or get) sleeps here. No Lua; never throws.
Suspension::End wait_on_thread(Channel* ch, Waiter* w, bool timed,
                               Clock::time_point deadline, Message* got = nullptr);

// Puts m into ch. timeout_ms: 0 never waits; < 0 or > kTimeoutMaxMs
// (clock.hpp) waits without limit. Unless done, m may have been consumed
// (it is never sent). No Lua; never throws.
ThreadPut put_from_thread(Channel* ch, Message& m, long long timeout_ms);

}  // namespace dss

#endif  // DSS_CORE_THREAD_PUT_HPP
