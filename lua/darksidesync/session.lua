-- darksidesync.session -- sessions: Lua states of their own, each running
-- a function among fibers, on a small pool of OS threads shared by all of
-- them (the casting model). Values passed in and results passed out are
-- copied (docs/sessions.md, "Copying values between states").
--
-- spawn(fn_or_source, ...) -> session   fn: a function without upvalues
--                                        (but _ENV); source: Lua text
-- s:join([timeout]) -> results... | nil, error (with traceback)
--                      | nil, "cancelled" | nil, "timeout"; in a fiber
--                      only the fiber waits
-- s:join_op()        the same as a darksidesync.fibers op
-- s:cancel()         at its next switch, each of its fibers blocked in an
--                    op gets the error "cancelled" from it, and any later
--                    blocking op raises it at once (what completes at once
--                    still does); once no fiber can run, it ends
--                    "cancelled" (docs/sessions.md)
-- s:status()         "running" | "done" | "error" | "cancelled"
-- is_cancelled(err)  whether err is that error ("cancelled", CANCELLED)
-- pool([{min=, max=, idle=}]) -> {min, max, threads, busy, peak, queued,
--                                 sessions}
-- close()            cancels every session, waits for them, joins the
--                    threads (closing the main state does it too)
-- insession()        whether the calling state is a session's

local dss = require "darksidesync"
local C = dss._session

local M = {}

M.spawn = C.spawn
M.pool = C.pool
M.close = C.close
M.insession = C._insession

-- Joining from a fiber waits on the session's end without blocking the
-- thread: its `_done` channel is closed when it ends.
local methods = C.methods
local c_join = methods.join

local function ended_results(s)
  return c_join(s, 0)
end

-- s:join_op(): an op (darksidesync.fibers) that completes when the
-- session ends, with join's results.
function methods.join_op(s)
  return s:_done():get_op():wrap(function() return ended_results(s) end)
end

function methods.join(s, timeout)
  local fiber = package.loaded["darksidesync.fibers.fiber"]
  if fiber == nil or fiber.current_fiber() == nil then return c_join(s, timeout) end
  if timeout ~= nil and type(timeout) ~= "number" then
    error("bad argument #1 to 'join' (number expected, got " .. type(timeout) .. ")", 2)
  end
  local op = s:join_op()
  if timeout ~= nil then
    local sleep = require "darksidesync.fibers.sleep"
    op = require("darksidesync.fibers.op").choice(op,
      sleep.sleep_op(timeout):wrap(function() return nil, "timeout" end))
  end
  return op:perform()
end

local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local unpack = unpack or table.unpack
local yield = coroutine.yield
local huge = math.huge

-- The error a cancelled session's blocking ops raise (and join's second
-- result for a cancelled session).
local CANCELLED = "cancelled"
M.CANCELLED = CANCELLED

-- is_cancelled(err): whether err is that error.
function M.is_cancelled(err)
  return err == CANCELLED
end

-- _boot(fn_or_source, ...): what a session's runner resumes in the new
-- state (src/lua/session.cpp). Runs fn(...) in a fiber under this state's
-- scheduler, which parks instead of sleeping: it yields (timeout, fd) to
-- the runner, which resumes it, with whether it was cancelled, once the
-- timeout passed, the fd is readable, or the hub's queue went non-empty.
-- Returns true, results...; false, error with traceback; or nil,
-- "cancelled".
--
-- Cancelled (seen at the start of a turn, or when the runner resumes a
-- park): fiber.cancel_all raises CANCELLED in every fiber blocked in an op,
-- and at once in any later blocking op; the scheduler runs on while
-- fibers can run (their cleanup), and stops when none can. The session
-- then ends "cancelled", however its function ended after that.
function M._boot(body, ...)
  local fn = body
  if type(body) == "string" then
    local chunk, err = (loadstring or load)(body, "=(session)")
    if not chunk then return false, err end
    fn = chunk
  end
  local fiber = require "darksidesync.fibers.fiber"
  -- Channel handles arriving here block fibers, not the thread, once the
  -- module has put its methods in place (it loads the ops on first use).
  require "darksidesync.channel"
  fiber.track_fibers()
  local sched = fiber.current_scheduler
  local source = fiber.dss_source
  local queuesize, cancelled = dss.queuesize, C._cancelled
  local main, results, failure
  local cancelling = false
  sched.maxsleep = huge

  local function cancel()
    if cancelling then return end
    cancelling = true
    fiber.cancel_all(CANCELLED)
  end

  -- Ended by its function (results, or an error) before any cancellation.
  local function ended()
    if results or failure then return true end
    if main and not main.alive and not cancelling then
      failure = main.traceback or "darksidesync.session: the session's fiber died"
      return true
    end
    return false
  end

  -- Once a turn (even a session that never parks): cancelled, or the
  -- function's fiber gone, stops the scheduler.
  sched:add_task_source({
    schedule_tasks = function(_, s)
      if not cancelling and cancelled() then cancel() end
      if ended() then s:stop() end
    end,
  })

  -- Called when no fiber can run: a cancelled session ends here.
  function sched.park(s, timeout)
    if ended() or cancelling then return s:stop() end
    -- Items already queued: the hub's wake-up came before the park.
    if source and source.wants_items() and queuesize() > 0 then return end
    local w, fd = s.event_waiter, nil
    if w and w.park_fd then fd = w:park_fd() end
    if yield(timeout < huge and timeout or nil, fd) then cancel() end
  end

  local prev = fiber.set_error_handler(function(err, tb, f)
    if f == main and not cancelling then
      failure = tb
      sched:stop()
    elseif cancelling and err == CANCELLED then
      return -- a fiber ended by the cancellation
    elseif prev then
      prev(err, tb, f)
    else
      io.stderr:write("darksidesync.session: error in fiber: ", tb, "\n")
    end
  end)

  fiber.spawn(function(...)
    main = fiber.current_fiber()
    local r = pack(fn(...))
    if cancelling then return end -- it caught the cancellation
    results = r
    sched:stop()
  end, ...)
  fiber.main()
  if results then return true, unpack(results, 1, results.n) end
  if failure then return false, failure end
  return nil, CANCELLED
end

return M
