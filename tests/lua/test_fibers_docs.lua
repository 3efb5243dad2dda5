-- test_fibers_docs.lua -- every ```lua block of docs/fibers.md compiles, and
-- the first one (the example) runs and prints what it should.

local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
local root = here .. "../../"
local compile = loadstring or load

local function blocks()
  local f = assert(io.open(root .. "docs/fibers.md", "r"))
  local text = f:read("*a")
  f:close()
  local list = {}
  for block in text:gmatch("```lua\n(.-)```") do list[#list + 1] = block end
  return list
end

test("docs/fibers.md: every lua block compiles", function()
  local list, bad = blocks(), {}
  ok(#list >= 1, "lua blocks found")
  for i, b in ipairs(list) do
    local fn, err = compile(b, "=fibers.md block " .. i)
    if not fn then bad[#bad + 1] = err end
  end
  eq(table.concat(bad, "\n"), "", "blocks that do not compile")
end)

test("docs/fibers.md: the example runs: got 1, 2, 3, then the channel closes", function()
  local fn = assert(compile(blocks()[1], "=fibers.md block 1"))
  local out = {}
  local real = print
  print = function(...) out[#out + 1] = table.concat({ ... }, " ") end
  local okay, err = pcall(fn)
  print = real
  ok(okay, tostring(err))
  eq(table.concat(out, ","), "got 1,got 2,got 3")
end)
