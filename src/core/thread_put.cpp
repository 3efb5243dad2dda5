// thread_put.cpp -- see thread_put.hpp.
#include "thread_put.hpp"

#include "clock.hpp"

#include <condition_variable>
#include <mutex>

namespace dss {

namespace {

// The calling thread, asleep until its suspension's wake() or a deadline.
struct Sleeper {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;

  static void wake(Suspension*, void* ctx) {
    Sleeper* s = static_cast<Sleeper*>(ctx);
    std::lock_guard<std::mutex> lock(s->mu);
    s->woken = true;
    s->cv.notify_one();
  }
  // False when the deadline passed first.
  bool sleep(bool timed, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu);
    if (!timed) {
      cv.wait(lock, [this] { return woken; });
      return true;
    }
    return cv.wait_until(lock, deadline, [this] { return woken; });
  }
};

ThreadPut of(Channel::Res r) {
  switch (r) {
    case Channel::Res::done: return ThreadPut::done;
    case Channel::Res::closed: return ThreadPut::closed;
    case Channel::Res::nomem: return ThreadPut::nomem;
    default: return ThreadPut::full;
  }
}

// Waits for w (its message in w->msg) on this thread, at most until the
// deadline when timed.
ThreadPut wait_put(Channel* ch, Waiter* w, bool timed, Clock::time_point deadline) {
  Sleeper sl;
  w->susp = Suspension::create(&Sleeper::wake, &sl);
  if (!w->susp) return ThreadPut::nomem;
  Channel::Res r = ch->put_wait(w);
  // A timeout that loses the race against a get (cancel() false) is no
  // timeout: the get took the message, and the end says so.
  if (r == Channel::Res::blocked && w->susp->end() == Suspension::End::none &&
      !sl.sleep(timed, deadline))
    w->susp->cancel();
  ch->unwait(w);
  w->susp->quiesce();  // sl lives on this frame
  Suspension::End e = w->susp->end();
  w->susp->unref();
  w->susp = nullptr;
  if (r == Channel::Res::nomem) return ThreadPut::nomem;
  if (e == Suspension::End::done) return ThreadPut::done;
  if (e == Suspension::End::closed) return ThreadPut::closed;
  return ThreadPut::timeout;  // cancelled: by us, at the deadline
}

}  // namespace

ThreadPut put_from_thread(Channel* ch, Message& m, long long timeout_ms) {
  Channel::Res r = ch->put_now(m);
  if (r != Channel::Res::blocked) return of(r);
  if (timeout_ms == 0) return ThreadPut::full;
  Clock::time_point deadline{};
  bool timed = deadline_ms(timeout_ms, &deadline);
  Waiter w;
  w.put = true;
  w.msg = std::move(m);
  return wait_put(ch, &w, timed, deadline);
}

}  // namespace dss
