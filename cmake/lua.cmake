# Finds the Lua headers, then the interpreter that goes with them (for the
# tests). The headers come from LUA_INCDIR when it is given (LuaRocks passes
# its own), else from pkg-config under Debian's names for DSS_LUA (lua5.1 ...
# lua5.4, luajit). The Lua version is then read from the lua.h (and
# luajit.h) actually used: when LuaRocks hands LUA_INCDIR in and DSS_LUA was
# not given, DSS_LUA follows the headers; a DSS_LUA that was given must agree
# with them, or configure fails.
if(NOT DSS_LUA MATCHES "^(5\\.[1-4]|luajit)$")
  message(FATAL_ERROR "DSS_LUA must be 5.1, 5.2, 5.3, 5.4 or luajit, not '${DSS_LUA}'")
endif()

if(LUA_INCDIR)
  # Given by LuaRocks: use it as it is (the module needs only the headers).
  set(DSS_LUA_INCLUDE_DIRS ${LUA_INCDIR})
  set(DSS_LUA_LIBRARIES "")
  set(_dss_from "LUA_INCDIR")
else()
  set(_dss_pc lua${DSS_LUA})
  if(DSS_LUA STREQUAL "luajit")
    set(_dss_pc luajit)
  endif()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(DSS_LUA_PC REQUIRED ${_dss_pc})
  set(DSS_LUA_INCLUDE_DIRS ${DSS_LUA_PC_INCLUDE_DIRS})
  # For programs that embed Lua (tests): link the library.
  set(DSS_LUA_LIBRARIES ${DSS_LUA_PC_LINK_LIBRARIES})
  set(_dss_from "pkg-config ${_dss_pc}")
endif()

# The version of the headers actually used: the first lua.h on the path.
set(_dss_lua_h "")
foreach(_d IN LISTS DSS_LUA_INCLUDE_DIRS)
  if(EXISTS "${_d}/lua.h")
    set(_dss_lua_h "${_d}/lua.h")
    set(_dss_incdir "${_d}")
    break()
  endif()
endforeach()
if(NOT _dss_lua_h)
  message(FATAL_ERROR "darksidesync: no lua.h in '${DSS_LUA_INCLUDE_DIRS}' (${_dss_from}); "
                      "install Lua's headers or pass -DLUA_INCDIR=<dir with lua.h>")
endif()
file(STRINGS "${_dss_lua_h}" _dss_defs REGEX "^#define[ \t]+LUA_(VERSION_NUM|VERSION_RELEASE|RELEASE)[ \t]")
string(REGEX MATCH "LUA_VERSION_NUM[ \t]+([0-9]+)" _m "${_dss_defs}")
set(_dss_num "${CMAKE_MATCH_1}")
if(NOT _dss_num MATCHES "^50[1-4]$")
  message(FATAL_ERROR "darksidesync: ${_dss_lua_h} (${_dss_from}) is not Lua 5.1-5.4 "
                      "(LUA_VERSION_NUM '${_dss_num}')")
endif()
math(EXPR _dss_minor "${_dss_num} - 500")
set(_dss_found "5.${_dss_minor}")
set(_dss_release "Lua ${_dss_found}")
if(_dss_defs MATCHES "LUA_VERSION_RELEASE[ \t]+\"([0-9]+)\"")
  set(_dss_release "Lua ${_dss_found}.${CMAKE_MATCH_1}")      # 5.2 and later
elseif(_dss_defs MATCHES "LUA_RELEASE[ \t]+\"(Lua [0-9.]+)\"")
  set(_dss_release "${CMAKE_MATCH_1}")                        # 5.1
endif()
if(EXISTS "${_dss_incdir}/luajit.h")
  file(STRINGS "${_dss_incdir}/luajit.h" _dss_jit REGEX "^#define[ \t]+LUAJIT_VERSION[ \t]")
  string(REGEX MATCH "\"([^\"]+)\"" _m "${_dss_jit}")
  set(_dss_release "${CMAKE_MATCH_1} (Lua ${_dss_found} ABI)")
  set(_dss_found luajit)
endif()

if(LUA_INCDIR AND NOT _dss_lua_given)
  set(DSS_LUA "${_dss_found}" CACHE STRING "Lua to build against: 5.1 5.2 5.3 5.4 luajit" FORCE)
  set(_DSS_LUA_AUTO "${_dss_found}" CACHE INTERNAL "DSS_LUA as set from LUA_INCDIR's headers")
elseif(NOT DSS_LUA STREQUAL _dss_found)
  message(FATAL_ERROR "darksidesync: DSS_LUA is ${DSS_LUA} but the headers in ${_dss_incdir} "
                      "(${_dss_from}) are ${_dss_release}. Pass -DDSS_LUA=${_dss_found}, or point "
                      "LUA_INCDIR at the headers of Lua ${DSS_LUA} (in a fresh build directory).")
endif()

if(DSS_LUA STREQUAL "luajit")
  set(_dss_interp luajit)
  set(_dss_abi 5.1)
else()
  set(_dss_interp lua${DSS_LUA})
  set(_dss_abi ${DSS_LUA})
endif()
if(DEFINED _DSS_LUA_INTERP_FOR AND NOT _DSS_LUA_INTERP_FOR STREQUAL _dss_interp)
  unset(DSS_LUA_INTERPRETER CACHE)   # found for another Lua in this build dir
endif()
set(_DSS_LUA_INTERP_FOR ${_dss_interp} CACHE INTERNAL "")
find_program(DSS_LUA_INTERPRETER NAMES ${_dss_interp})
set(DSS_LUA_ABI ${_dss_abi})
if(NOT DSS_INSTALL_CMOD)
  set(DSS_INSTALL_CMOD "lib/lua/${_dss_abi}")
endif()
if(NOT DSS_INSTALL_LMOD)
  set(DSS_INSTALL_LMOD "share/lua/${_dss_abi}")
endif()
message(STATUS "darksidesync: ${_dss_release}, headers ${_dss_incdir} (${_dss_from}), "
               "interpreter ${DSS_LUA_INTERPRETER}")
