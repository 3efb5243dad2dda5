-- darksidesync.casting -- casting's API (sessions, tasks, channels,
-- messages) as a thin layer over darksidesync.session and
-- darksidesync.channel. See docs/sessions.md, "casting".
--
-- local casting = require "darksidesync.casting"
--
-- Session.new() -> s             a session running a task server
-- s:create(fn, ...) -> task      runs fn(...) as a task (a fiber) in s; fn
--                                and the arguments are copied
-- s:wait() -> true               waits for every task created so far;
--                                raises the first task error not raised yet
-- s:close() -> true              cancels what still runs, joins the session
-- Session.set_threads(min, max), Session.threads() -> min, max, threads
-- task:status() -> "running" | "done" | "error", err | "cancelled"
-- task:wait()   -> the same, once the task ended
-- task:result() -> its results (raises its error; raises when cancelled)
-- Channel.new([size]) -> ch      0 or nil: unbuffered; n: n buffered;
--                                negative (or math.huge): unbounded
-- ch:write(...) -> true | nil, "closed"   the values as one message
-- ch:read() -> ... | nil, "closed"
-- ch:close(), ch:status() -> "open" | "closed", ch:len(), #ch (5.2+)
-- Message.new(...) -> m          the values, copied now
-- m:decode() -> ...              a fresh copy of them
--
-- Every call that waits blocks the calling thread outside a fiber (the
-- main state's plain calls), and suspends only the fiber inside one (a
-- task). Channels and messages are values that travel: written to a
-- channel or passed to create, they arrive as the same Channel (or
-- Message) in the other state -- each state that requires this module
-- registers their metatables with the copy routine (a session's task
-- server does). Sessions and tasks stay in the state that made them.

local channel = require "darksidesync.channel"
local session = require "darksidesync.session"

local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local unpack = unpack or table.unpack
local huge = math.huge
local floor = math.floor

local M = {}

-- Whether the caller runs in a fiber (then waiting suspends the fiber).
local function in_fiber()
  local f = package.loaded["darksidesync.fibers.fiber"]
  return type(f) == "table" and f.current_fiber() ~= nil
end

-- The values of a call travel packed in one table, so the copy routine
-- names value k of the call "value 1, at [k]": said here as "value k".
local function renumber(msg)
  if type(msg) ~= "string" then return msg end
  local head, k, rest = msg:match("^(darksidesync: cannot copy .-) %(value 1, at %[(%d+)%](.*)%)$")
  if not head then return msg end
  if rest == "" then return head .. " (value " .. k .. ")" end
  return head .. " (value " .. k .. ", at " .. rest .. ")"
end

-- Puts the table t on the darksidesync channel ch (waiting as put does),
-- raising the copy error as the caller's: true | nil, "closed". The copy
-- is made before anything could wait, so pcall never spans a yield (5.1).
local function put_packed(ch, t)
  if in_fiber() then
    local ok, op = pcall(ch.put_op, ch, t)
    if not ok then error(renumber(op), 0) end
    return op:perform()
  end
  local ok, r, e = pcall(ch.put, ch, t)
  if not ok then error(renumber(r), 0) end
  if r then return r end
  return r, e
end

-- Raises "bad argument #n to 'fname' (what)" at `level`, as error() counts
-- it from argerror's caller.
local function argerror(n, fname, what, level)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. what .. ")", level + 1)
end

-- Registers mt with the copy routine under name, and makes a checker of
-- its instances.
local function class(name, methods)
  local mt = { __index = methods }
  channel.register_metatable(name, mt)
  local function check(self, fname)
    if type(self) ~= "table" or getmetatable(self) ~= mt then
      argerror(1, fname, name .. " expected", 3)
    end
  end
  return mt, check
end

-- --- Channel -------------------------------------------------------------

local Channel, chan = {}, {}
local ChannelMT, check_chan = class("darksidesync.casting.Channel", chan)
M.Channel = Channel

-- Channel.new([size]): 0 or nil unbuffered (a write waits for a read), n
-- buffered, negative or math.huge unbounded.
function Channel.new(size)
  local cap = 0
  if size ~= nil then
    if type(size) ~= "number" or size ~= floor(size) then -- NaN too
      argerror(1, "new", "an integer size expected", 2)
    end
    cap = (size < 0 or size >= 1e15) and huge or size
  end
  return setmetatable({ ch = channel.new(cap) }, ChannelMT)
end

-- ch:write(...): the values, copied, as one message; true, or nil,
-- "closed". Waits while the channel is full.
function chan.write(self, ...)
  check_chan(self, "write")
  return put_packed(self.ch, pack(...))
end

-- ch:read(): the values of the oldest message; nil, "closed" once closed
-- and empty. Waits while the channel is empty.
function chan.read(self)
  check_chan(self, "read")
  local t, err = self.ch:get()
  if t == nil then return nil, err end
  return unpack(t, 1, t.n)
end

function chan.close(self)
  check_chan(self, "close")
  self.ch:close()
end

function chan.status(self)
  check_chan(self, "status")
  return self.ch:closed() and "closed" or "open"
end

function chan.len(self)
  check_chan(self, "len")
  return self.ch:len()
end

ChannelMT.__len = chan.len
ChannelMT.__eq = function(a, b) return a.ch == b.ch end
ChannelMT.__tostring = function(self)
  return (tostring(self.ch):gsub("^darksidesync%.channel", "darksidesync.casting.Channel"))
end

-- --- Message -------------------------------------------------------------

-- A message keeps its copy in a channel of its own (capacity 1), shared by
-- every copy of the message: decode takes the copy out, and puts a copy of
-- it back.
local Message, msg = {}, {}
local MessageMT, check_msg = class("darksidesync.casting.Message", msg)
M.Message = Message

function Message.new(...)
  local box = channel.new(1)
  put_packed(box, pack(...)) -- empty, capacity 1: never waits
  return setmetatable({ ch = box }, MessageMT)
end

function msg.decode(self)
  check_msg(self, "decode")
  local box = self.ch
  local t = box:get() -- waits while another state decodes it
  box:put(t)
  return unpack(t, 1, t.n)
end

MessageMT.__eq = function(a, b) return a.ch == b.ch end
MessageMT.__tostring = function(self)
  return (tostring(self.ch):gsub("^darksidesync%.channel", "darksidesync.casting.Message"))
end

-- --- Tasks ---------------------------------------------------------------

-- A task's handle: its result channel `done` (capacity 1), where the task
-- server puts {status = "done", n =, results...} or {status = "error",
-- err = message with traceback}; `state` once the result was taken.
local task = {}
local TaskMT = { __index = task }

local function check_task(self, fname)
  if type(self) ~= "table" or getmetatable(self) ~= TaskMT then
    argerror(1, fname, "darksidesync.casting.Task expected", 3)
  end
end

-- Sets the task's state from its result r (nil: it never came). Closing
-- `done` resumes any other fiber of this state waiting on it, which then
-- finds the state set.
local function settle(t, r)
  if t.state ~= "running" then return end
  if r == nil then
    t.state = "cancelled"
  elseif r.status == "done" then
    t.state, t.results = "done", r
  else
    t.state, t.err = "error", r.err
  end
  t.done:close()
end

-- Takes the result if it came (never waits).
local function refresh(t)
  if t.state == "running" and t.done:len() > 0 then settle(t, (t.done:get())) end
end

local ENDED = {}

-- Waits until the task's result came, or its session ended without it.
local function await(t)
  refresh(t)
  if t.state ~= "running" then return end
  local s = t.session.s
  if in_fiber() then
    local op = require "darksidesync.fibers.op"
    local r = op.choice(t.done:get_op(),
      s:_done():get_op():wrap(function() return ENDED end)):perform()
    if r == ENDED then
      r = nil
      if t.done:len() > 0 then r = t.done:get() end
    end
    return settle(t, r)
  end
  -- On this thread nothing else can end the session meanwhile (but an
  -- error of the server itself, a bug).
  if s:status() ~= "running" then return settle(t, nil) end
  settle(t, (t.done:get()))
end

function task.status(self)
  check_task(self, "status")
  refresh(self)
  if self.state == "error" then return "error", self.err end
  return self.state
end

function task.wait(self)
  check_task(self, "wait")
  await(self)
  return self:status()
end

function task.result(self)
  check_task(self, "result")
  await(self)
  if self.state == "done" then return unpack(self.results, 1, self.results.n) end
  if self.state == "error" then
    self.reported = true
    error(self.err, 0)
  end
  error("darksidesync.casting: the task was cancelled", 2)
end

-- --- Session -------------------------------------------------------------

local Session, sess = {}, {}
local SessionMT = { __index = sess }
M.Session = Session

local function check_session(self, fname)
  if type(self) ~= "table" or getmetatable(self) ~= SessionMT then
    argerror(1, fname, "darksidesync.casting.Session expected", 3)
  end
end

local SERVER = "return require('darksidesync.casting')._serve(...)"

-- A Session nobody can reach any more (its tasks refer to it: none of them
-- either) closes its inbox: the server runs the tasks it has to their end,
-- then the session ends, without a join. Its own handle's results are lost
-- with it, as a task's: nobody can ask for them.
local function release(inbox)
  pcall(inbox.close, inbox)
end
SessionMT.__gc = function(self) release(self.inbox) end

-- Session.new(): a darksidesync session running the task server, which
-- gets tasks from `inbox` (unbounded). `tasks`: the handles created here
-- not yet ended, and those whose error wait has not raised yet.
function Session.new()
  local inbox = channel.new(huge)
  local s = session.spawn(SERVER, inbox)
  local self = setmetatable({ s = s, inbox = inbox, tasks = {}, sweep = 64, closed = false }, SessionMT)
  if newproxy then -- Lua 5.1 and LuaJIT: tables have no __gc; a proxy does
    local guard = newproxy(true)
    getmetatable(guard).__gc = function() release(inbox) end
    self.guard = guard
  end
  return self
end

-- Drops the tasks that ended, but those with an error not raised yet.
local function prune(self)
  local keep = {}
  for _, t in ipairs(self.tasks) do
    refresh(t)
    if t.state == "running" or (t.state == "error" and not t.reported) then
      keep[#keep + 1] = t
    end
  end
  self.tasks = keep
end

function sess.create(self, fn, ...)
  check_session(self, "create")
  if type(fn) ~= "function" then
    argerror(1, "create", "function expected, got " .. type(fn), 2)
  end
  if self.closed then error("darksidesync.casting: the session is closed", 2) end
  local done = channel.new(1)
  local job = pack(fn, ...)
  job.done = done
  put_packed(self.inbox, job) -- unbounded: never waits
  local t = setmetatable({ done = done, state = "running", session = self }, TaskMT)
  local tasks = self.tasks
  tasks[#tasks + 1] = t
  if #tasks >= self.sweep then
    prune(self)
    self.sweep = math.max(64, 2 * #self.tasks)
  end
  return t
end

function sess.wait(self)
  check_session(self, "wait")
  local snap = {}
  for i, t in ipairs(self.tasks) do snap[i] = t end
  for _, t in ipairs(snap) do await(t) end
  local failed
  for _, t in ipairs(snap) do
    if t.state == "error" and not t.reported then
      failed = t
      break
    end
  end
  if failed then failed.reported = true end
  prune(self)
  if failed then error(failed.err, 0) end
  return true
end

function sess.close(self)
  check_session(self, "close")
  if self.closed then return true end
  self.closed = true
  self.inbox:close()
  self.s:cancel()
  self.s:join()
  for _, t in ipairs(self.tasks) do
    refresh(t)
    settle(t, nil)
  end
  prune(self)
  return true
end

SessionMT.__tostring = function(self)
  return (tostring(self.s):gsub("^darksidesync%.session", "darksidesync.casting.Session"))
end

local function check_count(n, fname, what, low)
  if type(n) ~= "number" or n ~= floor(n) or n < low or n >= 2 ^ 31 then
    argerror(what, fname, "an integer >= " .. (what == 1 and "1" or "min") .. " expected", 3)
  end
end

-- Session.set_threads(min, max): the pool's limits (darksidesync.session's
-- pool, shared by every session of this main state).
function Session.set_threads(min, max)
  check_count(min, "set_threads", 1, 1)
  check_count(max, "set_threads", 2, min)
  session.pool({ min = min, max = max })
  return Session.threads()
end

-- Session.threads() -> min, max, threads alive
function Session.threads()
  local p = session.pool()
  return p.min, p.max, p.threads
end

-- _serve(inbox): the task server, the function of every casting session.
-- Each task is a fiber; its result, or its error with the traceback (the
-- fiber's error handler sees it), goes to the task's `done` channel.
function M._serve(inbox)
  local fiber = require "darksidesync.fibers.fiber"
  local running = {} -- fiber -> its task
  -- The tasks still running: once the inbox is closed (the Session was
  -- collected) the server waits for them before it ends.
  local wg = require("darksidesync.fibers.waitgroup").new()

  -- Capacity 1, empty, one put: never waits.
  local function finish(job, r)
    local ok, err = pcall(job.done.put, job.done, r)
    if not ok then
      job.done:put({ status = "error",
        err = "darksidesync.casting: cannot return the results: " .. renumber(err) })
    end
  end

  local prev
  prev = fiber.set_error_handler(function(err, tb, f)
    local job = running[f]
    if job then
      running[f] = nil
      -- Ended by the session's cancellation: no result; the task is
      -- "cancelled" once the session ended.
      if not (fiber.cancelled ~= nil and session.is_cancelled(err)) then
        finish(job, { status = "error", err = tb })
      end
      return wg:done()
    end
    if prev then return prev(err, tb, f) end
    io.stderr:write("darksidesync.casting: error in fiber: ", tb, "\n")
  end)

  local function run(job)
    local f = fiber.current_fiber()
    running[f] = job
    local r = pack(job[1](unpack(job, 2, job.n)))
    running[f] = nil
    r.status = "done"
    finish(job, r)
    wg:done()
  end

  while true do
    local job = inbox:get()
    if job == nil then break end
    wg:add(1)
    fiber.spawn(run, job)
  end
  wg:wait()
end

return M
