/* placeholder: being written */
#include "darksidesync_aux.h"
int luaopen_dss_signal(lua_State *L) { (void)L; return 0; }
