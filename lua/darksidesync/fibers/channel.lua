-- darksidesync.fibers.channel -- CML channels: unbuffered (rendezvous) or
-- buffered, FIFO on both sides, closable. See docs/fibers.md.
--
-- close(): a closed channel's get returns the values still buffered, then
-- nil at once (blocked getters get nil); a put on it raises "channel
-- closed" (blocked putters raise it too). Closing again does nothing.

local op = require "darksidesync.fibers.op"

local M = {}

-- A FIFO: head and tail indexes over a table.
local function fifo() return { h = 1, t = 0 } end
local function push(q, v) q.t = q.t + 1; q[q.t] = v end
local function pop(q)
  local h = q.h
  if h > q.t then return nil end
  local v = q[h]
  q[h] = nil
  q.h = h + 1
  return v
end
local function size(q) return q.t - q.h + 1 end
-- Drops the entries at the head whose suspension has completed.
local function drop_stale(q)
  while q.h <= q.t and not q[q.h][1]:waiting() do pop(q) end
end
-- The first entry whose suspension still waits, taken off; nil if none.
local function pop_live(q)
  while q.h <= q.t do
    local e = pop(q)
    if e[1]:waiting() then return e end
  end
  return nil
end

local Channel = {}
Channel.__index = Channel

-- new([size]): size 0 (the default) is a rendezvous channel; otherwise a
-- buffer of that many values (math.huge: unbounded).
function M.new(bufsize)
  bufsize = bufsize or 0
  if type(bufsize) ~= "number" or bufsize < 0 or (bufsize ~= math.huge and bufsize % 1 ~= 0) then
    error("bad argument #1 to 'new' (non-negative integer expected)", 2)
  end
  return setmetatable({ size = bufsize, buf = fifo(), getq = fifo(), putq = fifo(),
                        closed = false }, Channel)
end

local function closed_error() error("channel closed", 0) end

function Channel:put_op(val)
  local ch = self
  local function try()
    if ch.closed then closed_error() end
    local g = pop_live(ch.getq)
    if g then
      g[1]:complete(g[2], val)
      return true
    end
    if size(ch.buf) < ch.size then
      push(ch.buf, { val })
      return true
    end
    return false
  end
  local function block(s, wrap)
    drop_stale(ch.putq)
    push(ch.putq, { s, wrap, val })
  end
  return op.new_base_op(nil, try, block)
end

function Channel:get_op()
  local ch = self
  local function try()
    local b = pop(ch.buf)
    if b then
      -- Room now: a waiting putter's value moves into the buffer.
      local p = pop_live(ch.putq)
      if p then
        push(ch.buf, { p[3] })
        p[1]:complete(p[2])
      end
      return true, b[1]
    end
    local p = pop_live(ch.putq)
    if p then
      p[1]:complete(p[2])
      return true, p[3]
    end
    if ch.closed then return true, nil end
    return false
  end
  local function block(s, wrap)
    drop_stale(ch.getq)
    push(ch.getq, { s, wrap })
  end
  return op.new_base_op(nil, try, block)
end

Channel.put_operation = Channel.put_op
Channel.get_operation = Channel.get_op

function Channel:put(val)
  self:put_op(val):perform()
end

function Channel:get()
  return self:get_op():perform()
end

-- close(): wakes every blocked fiber: getters get nil, putters raise
-- "channel closed".
function Channel:close()
  if self.closed then return end
  self.closed = true
  local g = pop_live(self.getq)
  while g do
    g[1]:complete(g[2], nil)
    g = pop_live(self.getq)
  end
  local p = pop_live(self.putq)
  while p do
    p[1]:complete(closed_error)
    p = pop_live(self.putq)
  end
end

function Channel:is_closed()
  return self.closed
end

return M
