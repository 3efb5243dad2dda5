-- darksidesync.fibers.sched -- the scheduler: a run queue served in turns,
-- a binary-heap timer, and task sources. See docs/fibers.md.
--
-- A task is any table with a run() method. One turn (run(t)): every task
-- source schedules what is due (the timer first: entries with time <= t),
-- then every task queued at that moment runs, oldest first; tasks queued
-- during the turn run in the next one.

local M = {}

local huge = math.huge

local Scheduler = {}
Scheduler.__index = Scheduler

-- The timer: a binary min-heap of {time, seq, task}; seq keeps entries with
-- the same time in the order they were added. (Comparisons inline: this is
-- the hot path of many sleepers.)
local function heap_push(h, e)
  local i = #h + 1
  local t, s = e[1], e[2]
  while i > 1 do
    local p = (i - i % 2) / 2
    local pe = h[p]
    local pt = pe[1]
    if t < pt or (t == pt and s < pe[2]) then
      h[i] = pe
      i = p
    else
      break
    end
  end
  h[i] = e
end

local function heap_pop(h)
  local n = #h
  local top = h[1]
  local last = h[n]
  h[n] = nil
  n = n - 1
  if n == 0 then return top end
  local t, s = last[1], last[2]
  local i = 1
  while true do
    local m = 2 * i
    if m > n then break end
    local me = h[m]
    local r = m + 1
    if r <= n then
      local re = h[r]
      local rt, mt = re[1], me[1]
      if rt < mt or (rt == mt and re[2] < me[2]) then m, me = r, re end
    end
    local mt = me[1]
    if mt < t or (mt == t and me[2] < s) then
      h[i] = me
      i = m
    else
      break
    end
  end
  h[i] = last
  return top
end

-- The timer as a task source; always the first source.
local Timer = {}
Timer.__index = Timer

function Timer:schedule_tasks(sched, now)
  local h = self.heap
  local top = h[1]
  if top == nil or top[1] > now then return end
  local q = sched.next
  local n = #q
  repeat
    n = n + 1
    q[n] = heap_pop(h)[3]
    top = h[1]
  until top == nil or top[1] > now
end

function Timer:cancel_all_tasks()
  local h = self.heap
  for i = #h, 1, -1 do h[i] = nil end
end

function Timer:next_entry_time()
  local top = self.heap[1]
  return top and top[1] or huge
end

local function default_clock()
  local ok, dss = pcall(require, "darksidesync")
  if ok and type(dss) == "table" and dss.monotime then return dss.monotime end
  return os.clock
end

-- new([clock]): a scheduler; clock() gives monotonic seconds (default
-- darksidesync.monotime).
function M.new(clock)
  clock = clock or default_clock()
  local self = setmetatable({
    next = {},          -- tasks for the next turn
    cur = {},           -- the turn being run
    sources = {},
    timer = setmetatable({ heap = {} }, Timer),
    seq = 0,
    clock = clock,
    _now = clock(),
    done = false,
    maxsleep = 10,
    event_waiter = nil,
  }, Scheduler)
  self.sources[1] = self.timer
  return self
end

function Scheduler:schedule(task)
  local q = self.next
  q[#q + 1] = task
end

-- now(): the scheduler's clock, as of the last turn (not a fresh read).
function Scheduler:now()
  return self._now
end

-- time(): the later of now() and the real clock: the base of sleeps, so
-- that a sleeper never wakes before its deadline by the real clock.
function Scheduler:time()
  local t = self.clock()
  if t < self._now then return self._now end
  return t
end

function Scheduler:schedule_at_time(t, task)
  self.seq = self.seq + 1
  heap_push(self.timer.heap, { t, self.seq, task })
end

-- A timer entry that is its own task: resumes a fiber (with no values),
-- once: [4] is the fiber until it fires or is aborted, then false.
local Wake = {}
Wake.__index = Wake
function Wake:run()
  local f = self[4]
  if f then
    self[4] = false
    if f.alive then f:resume() end
  end
end

-- A task that resumes fiber [1] with [2].
local Resume = {}
Resume.__index = Resume
function Resume:run()
  local f = self[1]
  if f.alive then f:resume(self[2]) end
end

-- abort(wrap, sched): the sleep ends now: the fiber resumes next turn with
-- wrap (the sleep calls it); the entry, when its time comes, does nothing.
-- (Cancellation: darksidesync.fibers.fiber's cancel_all.)
function Wake:abort(wrap, sched)
  local f = self[4]
  if not f then return end
  self[4] = false
  sched:schedule(setmetatable({ f, wrap }, Resume))
end

-- resume_at(t, f): resumes fiber f (no values) in the turn at time t; one
-- table, for plain sleeps (darksidesync.fibers.sleep). Returns the entry.
function Scheduler:resume_at(t, f)
  local seq = self.seq + 1
  self.seq = seq
  local e = setmetatable({ t, seq, false, f }, Wake)
  e[3] = e
  heap_push(self.timer.heap, e)
  return e
end

-- schedule_after_sleep(dt, task): dt counted from time() (above).
function Scheduler:schedule_after_sleep(dt, task)
  self:schedule_at_time(self:time() + dt, task)
end

-- add_task_source(src): src:schedule_tasks(sched, now) runs at the start of
-- every turn; a source with wait_for_events becomes the event waiter.
function Scheduler:add_task_source(src)
  self.sources[#self.sources + 1] = src
  if src.wait_for_events then self.event_waiter = src end
end

function Scheduler:schedule_tasks_from_sources(now)
  local sources = self.sources
  for i = 1, #sources do sources[i]:schedule_tasks(self, now) end
end

-- run([t]): one turn. t (default now()) advances the clock; it never goes
-- back.
function Scheduler:run(t)
  local now = self._now
  if t == nil or t < now then t = now end
  self._now = t
  local sources = self.sources
  -- sources[1] is the timer: called only when an entry is due.
  local timer = sources[1]
  local top = timer.heap[1]
  if top ~= nil and top[1] <= t then timer:schedule_tasks(self, t) end
  for i = 2, #sources do sources[i]:schedule_tasks(self, t) end
  local cur = self.next
  if cur[1] == nil then return end
  self.next, self.cur = self.cur, cur
  local n = #cur
  if n == 1 then -- the common case, without a loop (LuaJIT traces it)
    local task = cur[1]
    cur[1] = nil
    task:run()
    return
  end
  for i = 1, n do
    local task = cur[i]
    cur[i] = nil
    task:run()
  end
end

-- next_wake_time(): now() when tasks are queued, else the first timer's
-- time (math.huge when there is none).
function Scheduler:next_wake_time()
  if self.next[1] ~= nil then return self._now end
  return self.timer:next_entry_time()
end

-- wait_for_events(): sleeps until the next wake time (at most maxsleep),
-- in the event waiter when there is one.
function Scheduler:wait_for_events()
  local now = self.clock()
  local timeout = self:next_wake_time() - now
  if timeout > self.maxsleep then timeout = self.maxsleep end
  if not (timeout > 0) then timeout = 0 end
  local park = self.park
  if park then
    -- In a session (darksidesync.session): its runner parks it instead,
    -- and holds no thread until something wakes it.
    if timeout > 0 then park(self, timeout) end
    return
  end
  if self.event_waiter then
    self.event_waiter:wait_for_events(self, now, timeout)
  elseif timeout > 0 then
    local ok, dss = pcall(require, "darksidesync")
    if ok and dss.wait then dss.wait(timeout) end
  end
end

function Scheduler:stop()
  self.done = true
end

-- main(): wait for events, run a turn at the real clock, until stop().
function Scheduler:main()
  self.done = false
  repeat
    self:wait_for_events()
    self:run(self.clock())
  until self.done
end

-- shutdown(): cancels every source's tasks, then runs turns until the run
-- queue is empty (at most 100); true when it emptied.
function Scheduler:shutdown()
  for _ = 1, 100 do
    for _, src in ipairs(self.sources) do
      if src.cancel_all_tasks then src:cancel_all_tasks(self) end
    end
    if self.next[1] == nil then return true end
    self:run()
  end
  return false
end

return M
