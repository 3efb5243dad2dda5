// clock.hpp -- deadlines for the core's timed waits, and the calling
// thread's tag (for the marks the Lua thread leaves).
#ifndef DSS_CORE_CLOCK_HPP
#define DSS_CORE_CLOCK_HPP

#define DSS_NO_LUA_H
#include "darksidesync_api.h"

#include <pthread.h>

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace dss {

using Clock = std::chrono::steady_clock;

// Timeouts (deliver2's milliseconds, wait()'s seconds) longer than this
// mean "no limit": a deadline past it could not be held by the clock.
constexpr long long kTimeoutMaxMs = DSS_TIMEOUT_MAX_MS;

// A deadline ms milliseconds from now; false when there is none: ms < 0
// (DSS_TIMEOUT_INFINITE), or ms > kTimeoutMaxMs, too far for the clock
// (steady_clock counts nanoseconds in 64 bits from boot: now plus 100 years
// fits; now plus LONG_MAX milliseconds would overflow).
inline bool deadline_ms(long long ms, Clock::time_point* out) {
  if (ms < 0 || ms > kTimeoutMaxMs) return false;
  *out = Clock::now() + std::chrono::milliseconds(ms);
  return true;
}

// As deadline_ms, for a timeout in seconds (NaN: none).
inline bool deadline_in(double seconds, Clock::time_point* out) {
  if (!(seconds >= 0) || seconds > double(kTimeoutMaxMs) / 1000) return false;
  *out = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
  return true;
}

// Identifies the calling thread. Not a thread_local: the module is
// dlopen'ed, and LeakSanitizer crashes scanning the dynamic TLS of such
// libraries at exit.
template <typename T>
std::uintptr_t tag_of(T t) {
  if constexpr (std::is_pointer<T>::value)
    return reinterpret_cast<std::uintptr_t>(t);
  else
    return static_cast<std::uintptr_t>(t);
}
inline std::uintptr_t my_tag() { return tag_of(pthread_self()); }

}  // namespace dss

#endif  // DSS_CORE_CLOCK_HPP
