-- docblocks.lua -- the markdown code-block parser test_docs and
-- test_guide share (loaded with dofile; not a test file itself).

-- fenced_blocks(path[, name]) -> the ``` blocks of a markdown file, as a
-- list of { kind = (the fence's label, "text" when none), text =, line =,
-- n = (index among its kind) }; name (default path) is for messages.
local function fenced_blocks(path, name)
  name = name or path
  local list, cur, counts, lineno = {}, nil, {}, 0
  for line in (readfile(path) .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    local fence = line:match("^%s*```(%S*)%s*$")
    if cur then
      if fence == "" then
        list[#list + 1] = cur
        cur = nil
      else
        cur.text = cur.text .. line .. "\n"
      end
    elseif fence then
      local kind = fence == "" and "text" or fence
      counts[kind] = (counts[kind] or 0) + 1
      cur = { kind = kind, text = "", line = lineno, n = counts[kind] }
    end
  end
  assert(not cur, name .. ": a block opened at line " .. (cur and cur.line or 0) .. " never closes")
  return list
end

return fenced_blocks
