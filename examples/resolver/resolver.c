/* placeholder: being written */
#include "darksidesync_aux.h"
int luaopen_dss_resolver(lua_State *L) { (void)L; return 0; }
