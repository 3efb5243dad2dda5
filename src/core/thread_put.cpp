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

}  // namespace

Suspension::End wait_on_thread(Channel* ch, Waiter* w, bool timed,
                               Clock::time_point deadline, Message* got) {
  Sleeper sl;
  w->susp = Suspension::create(&Sleeper::wake, &sl);
  if (!w->susp) return Suspension::End::none;
  Channel::Res r = w->put ? ch->put_wait(w) : ch->get_wait(w);
  // A deadline that loses the race against a completion (cancel() false)
  // is no timeout: the end says what completed it.
  if (r == Channel::Res::blocked && w->susp->end() == Suspension::End::none &&
      !sl.sleep(timed, deadline))
    w->susp->cancel();
  ch->unwait(w);
  w->susp->quiesce();  // sl lives on this frame
  Suspension::End e = w->susp->end();
  if (got && !w->put && e == Suspension::End::done) *got = std::move(w->susp->message());
  w->susp->unref();
  w->susp = nullptr;
  return r == Channel::Res::nomem ? Suspension::End::none : e;
}

ThreadPut put_from_thread(Channel* ch, Message& m, long long timeout_ms) {
  Channel::Res r = ch->put_now(m);
  if (r != Channel::Res::blocked) return of(r);
  if (timeout_ms == 0) return ThreadPut::full;
  Clock::time_point deadline{};
  bool timed = deadline_ms(timeout_ms, &deadline);
  Waiter w;
  w.put = true;
  w.msg = std::move(m);
  switch (wait_on_thread(ch, &w, timed, deadline)) {
    case Suspension::End::done: return ThreadPut::done;
    case Suspension::End::closed: return ThreadPut::closed;
    case Suspension::End::cancelled: return ThreadPut::timeout;  // by us, at the deadline
    default: return ThreadPut::nomem;
  }
}

}  // namespace dss
