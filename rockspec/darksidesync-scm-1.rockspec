rockspec_format = "3.0"
package = "darksidesync"
version = "scm-1"
source = {
  url = "git+https://github.com/darksidesync/darksidesync.git",
  branch = "main",
}
description = {
  summary = "Safe callbacks into Lua from threads Lua does not own",
  detailed = [[
    Background threads of C libraries deliver items to a queue; Lua polls
    them out (optionally woken by a UDP packet) and may hand results back to
    a producer that blocks until Lua answers. Helpers for luv, cqueues,
    Copas and socket.select loops. A drop-in replacement for
    DarkSideSync 1.0: same Lua API, same C ABI ("DSS API 1v0"), on Lua 5.1,
    5.2, 5.3, 5.4 and LuaJIT.
  ]],
  license = "MIT",
  labels = { "threads", "callbacks", "async" },
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
-- No modules table: with build type cmake, CMake's install rule installs
-- lua/ (dss.lua and the event-loop helpers lua/darksidesync/*.lua, required
-- as "darksidesync.luv", "darksidesync.cqueues", "darksidesync.copas",
-- "darksidesync.select", "darksidesync.reader", and the fibers:
-- "darksidesync.fibers" and "darksidesync.fibers.*") into $(LUADIR);
-- scripts/check-rockspec.sh checks they are there.
-- The install prefix is the rock's own directory, $(PREFIX) =
-- <tree>/lib/luarocks/rocks-<ver>/darksidesync/scm-1: the C headers for
-- client libraries go to $(PREFIX)/include/darksidesync and darksidesync.pc
-- to $(PREFIX)/share/pkgconfig, inside the tree (nothing is written outside
-- it, so a user tree needs no root); LuaRocks deploys only lib/ and lua/ from
-- there. Clients find them through `luarocks show --rock-dir darksidesync`
-- (docs/install.md). DSS_LUA follows the headers in $(LUA_INCDIR).
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    DSS_INSTALL_CMOD = "$(LIBDIR)",
    DSS_INSTALL_LMOD = "$(LUADIR)",
    DSS_TESTS = "OFF",
    DSS_EXAMPLES = "OFF",
  },
}
