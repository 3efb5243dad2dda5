// interrupt.hpp -- SIGINT during wait(): see interrupt.cpp.
#ifndef DSS_LUA_INTERRUPT_HPP
#define DSS_LUA_INTERRUPT_HPP

namespace dss_interrupt {

// Before a wait: when SIGINT has a handler (the stock interpreter's), puts
// ours in front of it and returns the fd a signal makes readable; -1 when
// SIGINT is left alone (default or ignored). *count is a mark for end().
int begin(unsigned* count);

// After the wait (whatever begin returned): restores the displaced handler
// when the last wait ends; true when a SIGINT came since begin.
bool end(unsigned count);

}  // namespace dss_interrupt

#endif
