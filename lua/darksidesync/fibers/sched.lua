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
-- the same time in the order they were added.
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end

local function heap_push(h, e)
  local i = #h + 1
  h[i] = e
  while i > 1 do
    local p = (i - i % 2) / 2
    if before(h[i], h[p]) then
      h[i], h[p] = h[p], h[i]
      i = p
    else
      break
    end
  end
end

local function heap_pop(h)
  local n = #h
  local top = h[1]
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l = 2 * i
    local r = l + 1
    local m = i
    if l <= n and before(h[l], h[m]) then m = l end
    if r <= n and before(h[r], h[m]) then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

-- The timer as a task source; always the first source.
local Timer = {}
Timer.__index = Timer

function Timer:schedule_tasks(sched, now)
  local h = self.heap
  while h[1] and h[1][1] <= now do
    sched:schedule(heap_pop(h)[3])
  end
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
  if t == nil or t < self._now then t = self._now end
  self._now = t
  self:schedule_tasks_from_sources(t)
  local cur = self.next
  self.next, self.cur = self.cur, cur
  local n = #cur
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
