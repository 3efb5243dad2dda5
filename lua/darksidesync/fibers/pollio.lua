-- darksidesync.fibers.pollio -- fd readiness as ops: a fiber waits for an
-- fd to become readable or writable without blocking the OS thread. The
-- scheduler then sleeps in a darksidesync.poller (epoll, or poll(2)) that
-- also watches darksidesync's wake-up fd, with the next timer as its
-- timeout: items from C threads, fds and timers wake one loop. See
-- docs/fibers.md.

local dss = require "darksidesync"
local op = require "darksidesync.fibers.op"
local fiber = require "darksidesync.fibers.fiber"

local M = {}

local POLL = dss.POLL
local IN, OUT, PRI, RDHUP = POLL.IN, POLL.OUT, POLL.PRI, POLL.RDHUP
local ERR, HUP = POLL.ERR, POLL.HUP
-- What wakes a reader (its data, an error, the peer's close) and a writer.
local WAKES_READER = IN + PRI + RDHUP + ERR + HUP
local WAKES_WRITER = OUT + ERR + HUP

local band = (function()
  local ok, bit = pcall(require, "bit")       -- LuaJIT
  if ok and type(bit) == "table" then return bit.band end
  ok, bit = pcall(require, "bit32")           -- 5.2 (and compat53)
  if ok and type(bit) == "table" then return bit.band end
  if _VERSION ~= "Lua 5.1" then
    -- 5.3+: the operator, compiled only where it parses.
    return assert(load("return function(a, b) return a & b end"))()
  end
  return function(a, b)                       -- plain 5.1: by digits
    local r, v = 0, 1
    while a > 0 and b > 0 do
      local x, y = a % 2, b % 2
      if x == 1 and y == 1 then r = r + v end
      a, b, v = (a - x) / 2, (b - y) / 2, v * 2
    end
    return r
  end
end)()

local Handler = {}
Handler.__index = Handler

-- The handler: one poller; readers[fd] / writers[fd] are arrays of
-- {suspension, wrap} (entries whose suspension completed elsewhere are
-- dropped lazily).
local function new_handler(backend)
  local p, err = dss.poller(backend)
  if not p then error(err, 3) end
  local self = setmetatable({
    poller = p,
    readers = {},
    writers = {},
    waiting = 0,     -- fds with an armed interest
    out = {},
    polled = false,  -- wait_for_events polled for this turn already
    hubfd = nil,
  }, Handler)
  local ok, fd = pcall(dss.getfd)
  if ok then self.hubfd = fd end
  return self
end

-- Drops completed entries; returns the number still waiting.
local function prune(list)
  local j = 0
  for i = 1, #list do
    local w = list[i]
    list[i] = nil
    if w[1]:waiting() then
      j = j + 1
      list[j] = w
    end
  end
  return j
end

local function wake(list)
  for i = 1, #list do
    local w = list[i]
    list[i] = nil
    if w[1]:waiting() then w[1]:complete(w[2]) end
  end
end

-- (Re)arms fd for exactly the waiters still on its lists.
function Handler:arm(fd)
  local mask = 0
  local r, w = self.readers[fd], self.writers[fd]
  if r and prune(r) > 0 then mask = mask + IN + RDHUP end
  if w and prune(w) > 0 then mask = mask + OUT end
  if mask == 0 then
    self.readers[fd], self.writers[fd] = nil, nil
    self.poller:del(fd)
    return
  end
  local ok = self.poller:set(fd, mask, true)
  if not ok then
    -- Not pollable (closed, or a regular file under epoll): wake them all
    -- on the next turn (not now: a waiter that waits again at once would
    -- come straight back here); their next attempt sees the error, or
    -- the data.
    self.readers[fd], self.writers[fd] = nil, nil
    self.poller:del(fd)
    fiber.current_scheduler:schedule({ run = function()
      if r then wake(r) end
      if w then wake(w) end
    end })
  end
end

function Handler:wait_for(fd, lists, s, wrap)
  local list = lists[fd]
  if not list then
    list = {}
    lists[fd] = list
  end
  list[#list + 1] = { s, wrap }
  self:arm(fd)
end

-- Wakes every waiter of fd (readers and writers) and forgets fd.
function Handler:wake_fd(fd)
  local r, w = self.readers[fd], self.writers[fd]
  self.readers[fd], self.writers[fd] = nil, nil
  self.poller:del(fd)
  if r then wake(r) end
  if w then wake(w) end
end

function Handler:dispatch(n, out)
  local readers, writers, hubfd = self.readers, self.writers, self.hubfd
  for i = 1, 2 * n, 2 do
    local fd, ev = out[i], out[i + 1]
    if fd ~= hubfd then
      -- One-shot: the poller dropped fd's whole interest.
      local r, w = readers[fd], writers[fd]
      if r and band(ev, WAKES_READER) ~= 0 then
        readers[fd] = nil
        wake(r)
      end
      if w and band(ev, WAKES_WRITER) ~= 0 then
        writers[fd] = nil
        wake(w)
      end
      self:arm(fd)
    end
  end
end

-- Task source: a turn that did not start with wait_for_events polls
-- without sleeping, when some fiber waits for an fd.
function Handler:schedule_tasks(_, _)
  if self.polled then
    self.polled = false
    return
  end
  if self.poller:armed() == 0 then return end
  local n, out = self.poller:wait(0, self.out)
  if n then self:dispatch(n, out) end
end

-- The scheduler's sleep: until an fd is ready, an item is queued, or the
-- timeout (the next timer) passes.
-- Whether a queued item should wake the scheduler: when the dss task source
-- drains automatically, or a fiber waits in items.ready_op. (With the
-- draining off and nobody waiting, queued items must not keep the poller
-- awake.)
local function items_wake()
  local src = fiber.dss_source
  if not src then return false end
  if src.wants_items then return src.wants_items() end
  return src.auto ~= false
end

function Handler:wait_for_events(_, _, timeout)
  local hubfd = self.hubfd
  if hubfd then
    if items_wake() then
      self.poller:set(hubfd, IN, true)
    else
      self.poller:del(hubfd)
    end
  end
  local n, out = self.poller:wait(timeout, self.out)
  if n then self:dispatch(n, out) end
  self.polled = true
end

-- park_fd(): in a session (darksidesync.session), the fd its runner
-- watches while the session is parked: the poller's own, readable when an
-- armed fd is ready; nil when no fd is armed (or the poll backend has no
-- such fd).
function Handler:park_fd()
  if self.poller:armed() == 0 then return nil end
  return self.poller:getfd()
end

function Handler:cancel_all_tasks()
  -- Fibers waiting for fds stay blocked (as lua-fibers' do); nothing queued.
end

local handler = nil

-- install_poll_io_handler([backend]): makes the current scheduler sleep in
-- a poller (backend "epoll" or "poll"; default: epoll where the system has
-- it). Idempotent; the fd ops install it themselves when needed. Returns
-- the handler.
function M.install_poll_io_handler(backend)
  if handler then return handler end
  handler = new_handler(backend)
  fiber.current_scheduler:add_task_source(handler)
  return handler
end

local function get_handler()
  return handler or M.install_poll_io_handler()
end

local function check_fd(fd, name)
  if type(fd) ~= "number" or fd < 0 or fd % 1 ~= 0 then
    error("bad argument #1 to '" .. name .. "' (fd expected, got " ..
          (type(fd) == "number" and tostring(fd) or type(fd)) .. ")", 3)
  end
end

local function never() return false end

-- fd_readable_op(fd): ready when fd is readable (or at its end, or in
-- error). No result.
function M.fd_readable_op(fd)
  check_fd(fd, "fd_readable_op")
  local h = get_handler()
  return op.new_base_op(nil, never, function(s, wrap)
    h:wait_for(fd, h.readers, s, wrap)
  end)
end

-- fd_writable_op(fd): ready when fd can be written (or is in error).
function M.fd_writable_op(fd)
  check_fd(fd, "fd_writable_op")
  local h = get_handler()
  return op.new_base_op(nil, never, function(s, wrap)
    h:wait_for(fd, h.writers, s, wrap)
  end)
end

function M.fd_readable(fd)
  return M.fd_readable_op(fd):perform()
end

function M.fd_writable(fd)
  return M.fd_writable_op(fd):perform()
end

-- wait_fd(fd, write, waiter): the low-level form of the ops, for wrappers
-- that retry their I/O in the scheduler: waiter:complete() is called (with
-- no arguments) once fd is readable (write false) or writable (write
-- true), unless waiter:waiting() is false by then. A waiter may call
-- wait_fd again from complete().
function M.wait_fd(fd, write, waiter)
  check_fd(fd, "wait_fd")
  local h = get_handler()
  h:wait_for(fd, write and h.writers or h.readers, waiter, nil)
end

-- fd_closed(fd): call before closing an fd that fibers may wait on: wakes
-- them (their next read or write sees the close) and forgets fd.
function M.fd_closed(fd)
  if handler then handler:wake_fd(fd) end
end

-- The poller's event bits (darksidesync.POLL) and a helper to test them.
M.POLL = POLL
M.band = band

return M
