-- test_fibers_stress.lua -- darksidesync.fibers under load: thousands of
-- fibers over a few channels (unbuffered and buffered), each step a random
-- choice of puts, gets and tiny sleeps, the clock driven by hand; and items
-- of C producer threads (the test client) becoming fibers that hand their
-- values on through random choices, fire-and-forget and blocking. Every
-- message is received exactly once, every fiber finishes, the client's
-- counters are exact. Seeded; the counts shrink under DSS_TEST_TIMESCALE
-- (valgrind).

local dss = require "darksidesync"
local tc = require "testclient"
local fiber = require "darksidesync.fibers.fiber"
local fibers = require "darksidesync.fibers"
local sleep = require "darksidesync.fibers.sleep"
local channel = require "darksidesync.fibers.channel"
local waitgroup = require "darksidesync.fibers.waitgroup"
local op = require "darksidesync.fibers.op"

local slow = os.getenv("DSS_TEST_TIMESCALE") ~= nil
local sched = fiber.current_scheduler

-- main_with_guard(f): fibers.main(f), stopped with a failure after 30 s.
local function main_with_guard(f)
  local timed_out = false
  fiber.spawn(function() sleep.sleep(30 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1)); timed_out = true; fiber.stop() end)
  fibers.main(f)
  ok(not timed_out, "finished before the guard's 30 s")
end

-- pick(t, k): k distinct random elements of t.
local function pick(t, k)
  local idx = {}
  for i = 1, #t do idx[i] = i end
  local r = {}
  for i = 1, k do
    local j = math.random(i, #t)
    idx[i], idx[j] = idx[j], idx[i]
    r[i] = t[idx[i]]
  end
  return r
end

local SLEPT = {} -- the marker a sleep arm returns

-- put_somewhere(chans, v[, maxsleep]): puts v on one of a random subset of
-- chans, a tiny sleep (up to maxsleep, default 1 ms) racing the puts; retries after the sleep wins. Returns the
-- number of tries.
local function put_somewhere(chans, v, maxsleep)
  local tries = 0
  while true do
    tries = tries + 1
    local arms = {}
    for i, ch in ipairs(pick(chans, math.random(1, #chans))) do
      arms[i] = ch:put_op(v):wrap(function() return true end)
    end
    arms[#arms + 1] = sleep.sleep_op(math.random() * (maxsleep or 0.001)):wrap(function() return SLEPT end)
    if op.choice(unpack(arms)):perform() == true then return tries end
  end
end

-- get_somewhere(chans[, maxsleep]): a value got from one of a random subset of chans,
-- a tiny sleep racing the gets (SLEPT if it won); nil once closed.
local function get_somewhere(chans, maxsleep)
  local arms = {}
  for i, ch in ipairs(pick(chans, math.random(1, #chans))) do arms[i] = ch:get_op() end
  arms[#arms + 1] = sleep.sleep_op(math.random() * (maxsleep or 0.001)):wrap(function() return SLEPT end)
  return op.choice(unpack(arms)):perform()
end

-- The C producers first: they run under main() on the real clock; the
-- hand-driven clock of the last test would hold main()'s timers back.

test("items of 4 C threads become fibers, each handing its value on through random choices; each received once", function()
  fresh()
  math.randomseed(1601)
  local THREADS, ITEMS = 4, slow and 50 or 250
  local total = THREADS * ITEMS
  local chans = { channel.new(), channel.new(), channel.new(4) }
  local wg = waitgroup.new()
  local got, received, started, finished, dups = {}, 0, 0, 0, 0
  local consumers_done, NCONS = 0, 20
  for c = 1, NCONS do
    wg:add(1)
    fiber.spawn(function()
      while true do
        local v = get_somewhere(chans)
        if v == nil then break end -- closed: everything was received
        if v ~= SLEPT then
          if got[v] then dups = dups + 1 end
          got[v] = true
          received = received + 1
          if received == total then for _, ch in ipairs(chans) do ch:close() end end
        end
      end
      consumers_done = consumers_done + 1
      wg:done()
    end)
  end
  tc.setcallback(function(lib, pid, seq)
    started = started + 1
    wg:add(1)
    if math.random() < 0.3 then sleep.sleep(math.random() * 0.002) end
    put_somewhere(chans, lib .. "/" .. pid .. "/" .. seq)
    finished = finished + 1
    wg:done()
  end)
  local pids = pack(tc.start { threads = THREADS, items = ITEMS })
  main_with_guard(function() wg:wait(); fiber.stop() end)
  ok(tc.join(), "join")
  eq(started, total, "callbacks started")
  eq(finished, total, "callbacks finished")
  eq(received, total, "received")
  eq(dups, 0, "duplicates")
  eq(consumers_done, NCONS, "consumers finished")
  local n = 0
  for _ in pairs(got) do n = n + 1 end
  eq(n, total, "distinct values")
  for _, pid in ipairs(pids) do
    for seq = 1, ITEMS do ok(got["1/" .. pid .. "/" .. seq], "item 1/" .. pid .. "/" .. seq) end
  end
  eq(dss.queuesize(), 0, "drained")
  tc.check { threads = THREADS, completed = THREADS, attempts = total, delivered = total, decoded = total,
             ended = total, allocated = total, freed = total }
end)

test("blocking items of 4 C threads, each answered by its fiber after a random-choice round trip to echo fibers", function()
  fresh()
  math.randomseed(1602)
  local THREADS, ITEMS = 4, slow and 10 or 50
  local total = THREADS * ITEMS
  local chans = { channel.new(), channel.new(), channel.new(2) }
  local wg = waitgroup.new()
  local answered, echoed, echoes_done, NECHO = 0, 0, 0, 8
  for e = 1, NECHO do
    wg:add(1)
    fiber.spawn(function()
      while true do
        local m = get_somewhere(chans)
        if m == nil then break end
        if m ~= SLEPT then
          echoed = echoed + 1
          if math.random() < 0.5 then sleep.sleep(math.random() * 0.001) end
          m.reply:put(m.v)
        end
      end
      echoes_done = echoes_done + 1
      wg:done()
    end)
  end
  tc.setcallback(function(wt, _, pid, seq)
    wg:add(1)
    local reply = channel.new()
    put_somewhere(chans, { v = pid * 1000 + seq, reply = reply })
    local a
    repeat -- the reply, racing a tiny sleep
      a = op.choice(reply:get_op(), sleep.sleep_op(math.random() * 0.001):wrap(function() return SLEPT end)):perform()
    until a ~= SLEPT
    wt(a)
    answered = answered + 1
    if answered == total then for _, ch in ipairs(chans) do ch:close() end end
    wg:done()
  end)
  tc.start { blocking = true, threads = THREADS, items = ITEMS }
  main_with_guard(function() wg:wait(); fiber.stop() end)
  ok(tc.join(), "join")
  eq(answered, total, "answered")
  eq(echoed, total, "echoed")
  eq(echoes_done, NECHO, "echo fibers finished")
  eq(dss.queuesize(), 0, "drained")
  tc.check { threads = THREADS, completed = THREADS, attempts = total, delivered = total, released = total,
             decoded = total, returned = total, answers_ok = total, ended = total }
end)

-- run_by_hand(done, bound[, step]): turns until done() or nothing can ever
-- run again; returns the number of turns. Each turn moves the clock on by
-- step (default 0: time passes only when nothing is queued), or to the next
-- timer when nothing is queued.
local function run_by_hand(done, bound, step)
  local turns = 0
  while not done() do
    local t = sched:next_wake_time()
    if t == math.huge then break end -- nothing queued, no timer: stuck
    sched:run(math.max(t, sched:now() + (step or 0)))
    turns = turns + 1
    if turns > bound then error("more than " .. bound .. " turns", 2) end
  end
  return turns
end

-- ahead(): moves the scheduler's clock 100 s ahead of the real one, so that
-- sleeps count from the hand-driven clock alone (time() is the later of
-- the two). Only for the last tests of this file: main() would now hold
-- every timer back for 100 s.
local function ahead()
  sched:run(sched:time() + 100)
end

test("thousands of fibers, random choices of puts, gets and tiny sleeps over 4 channels, clock by hand: each message once", function()
  math.randomseed(1603)
  ahead()
  local NPROD, NCONS, PER = slow and 320 or 1600, slow and 80 or 400, 3 -- more putters than getters: both block
  local total = NPROD * PER
  local chans = { channel.new(), channel.new(), channel.new(1), channel.new(8) }
  local sent, got = {}, {}
  local received, dups, prod_done, cons_done, retries, idle = 0, 0, 0, 0, 0, 0
  for p = 1, NPROD do
    fiber.spawn(function()
      for k = 1, PER do
        local v = p * 100 + k
        if math.random() < 0.5 then sleep.sleep(math.random() * 0.001) end
        local tries = put_somewhere(chans, v, 0.001) -- blocks: not inside retries + ...
        retries = retries + tries - 1
        sent[v] = (sent[v] or 0) + 1
      end
      prod_done = prod_done + 1
    end)
  end
  for c = 1, NCONS do
    fiber.spawn(function()
      while true do
        local v = get_somewhere(chans, 0.0003)
        if v == nil then break end -- closed after the last message
        if v == SLEPT then
          idle = idle + 1
        else
          if got[v] then dups = dups + 1 end
          got[v] = (got[v] or 0) + 1
          received = received + 1
          if received == total then for _, ch in ipairs(chans) do ch:close() end
          elseif math.random() < 0.8 then sleep.sleep(math.random() * 0.002) -- some work
          else fiber.yield() end
        end
      end
      cons_done = cons_done + 1
    end)
  end
  -- 0.1 ms a turn: the tiny sleeps expire while others still work
  local turns = run_by_hand(function() return prod_done == NPROD and cons_done == NCONS end, 100000, 0.0001)
  eq(prod_done, NPROD, "producers finished (" .. turns .. " turns)")
  eq(cons_done, NCONS, "consumers finished")
  eq(received, total, "received")
  eq(dups, 0, "duplicates")
  for p = 1, NPROD do
    for k = 1, PER do
      local v = p * 100 + k
      if sent[v] ~= 1 or got[v] ~= 1 then
        error(("value %d: sent %s times, received %s times"):format(v, tostring(sent[v]), tostring(got[v])))
      end
    end
  end
  ok(retries > 0, "some sleep arm won over a put (" .. turns .. " turns)")
  ok(idle > 0, "some sleep arm won over a get")
  -- Nothing left but the timers of sleep arms that lost: they drain, and
  -- no fiber runs again.
  local extra = run_by_hand(function() return false end, 100000)
  eq(sched:next_wake_time(), math.huge, "no task, no timer left (" .. extra .. " more turns)")
end)

test("2000 fibers in a ring of unbuffered channels pass a token around 3 times, clock by hand", function()
  local N, ROUNDS = slow and 300 or 2000, 3
  math.randomseed(1604)
  ahead()
  local ring = {}
  for i = 1, N do ring[i] = channel.new() end
  local done, hops = 0, 0
  for i = 1, N do
    fiber.spawn(function()
      local inp, out = ring[i], ring[i % N + 1]
      for r = 1, ROUNDS do
        local tok = inp:get()
        hops = hops + 1
        if math.random() < 0.01 then sleep.sleep(0.0001) end
        if not (i == N and r == ROUNDS) then out:put(tok + 1) end
      end
      done = done + 1
    end)
  end
  fiber.spawn(function() ring[1]:put(0) end)
  run_by_hand(function() return done == N end, 1000000)
  eq(done, N, "every fiber finished")
  eq(hops, N * ROUNDS, "hops")
  run_by_hand(function() return false end, 1000)
  eq(sched:next_wake_time(), math.huge, "nothing left")
end)
