-- test_docs.lua -- every ```lua block of the README and the docs compiles
-- on this Lua version (a snippet with a typo fails here, not in a user's
-- hands). The loop examples themselves run in test_loop_*.lua.

local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
local root = here .. "../../"
-- The files with Lua examples, and how many blocks each has at least.
local files = {
  { "README.md", 4 }, { "docs/lua-api.md", 2 }, { "docs/integrations.md", 7 },
  { "examples/signal/README.md", 1 }, { "examples/resolver/README.md", 3 },
  { "examples/resolver_cpp/README.md", 1 },
}
local compile = loadstring or load

for _, entry in ipairs(files) do
  local name, least = entry[1], entry[2]
  test(name .. ": every lua block compiles", function()
    local f = assert(io.open(root .. name, "r"))
    local text = f:read("*a")
    f:close()
    local n, bad = 0, {}
    for block in text:gmatch("```lua\n(.-)```") do
      n = n + 1
      local fn, err = compile(block, "=" .. name .. " block " .. n)
      if not fn then bad[#bad + 1] = err end
    end
    ok(n >= least, "lua blocks found: " .. n .. ", expected at least " .. least)
    eq(table.concat(bad, "\n"), "", "blocks that do not compile")
  end)
end
