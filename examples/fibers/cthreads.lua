-- cthreads.lua -- a C library's thread, a socket and a timer driving one
-- fiber loop.
-- The ticker example library (examples/ticker, built as ticker.so) runs a
-- C thread that delivers N ticks, fire and forget, then asks a blocking
-- question and waits for Lua's answer. Under darksidesync.fibers each
-- delivered item runs as a fiber of its own: the tick callbacks pass the
-- ticks on over a channel, and the question's callback waits on a channel
-- before it answers. Meanwhile a timer fiber beats every 5 ms and sends
-- each beat as a datagram to a UDP socket that another fiber waits on
-- (pollio.fd_readable). The main fiber selects over the ticks and a
-- timeout. main() sleeps in one epoll poller that watches the socket,
-- darksidesync's wake-up fd and the next timer: a tick, a datagram and a
-- due sleep each wake it at once.
--
--   lua cthreads.lua [N]

local dss = require "darksidesync"        -- load it before the client library
local ticker = require "ticker"
local fibers = require "darksidesync.fibers"
local channel = require "darksidesync.fibers.channel"
local sleep = require "darksidesync.fibers.sleep"
local op = require "darksidesync.fibers.op"
local pollio = require "darksidesync.fibers.pollio"
local socket = require "socket"

local n = tonumber(arg and arg[1]) or 5

local ticks = channel.new()
local answer = channel.new()
local answered = channel.new()
local beats, heard = 0, 0

local inbox = assert(socket.udp())
assert(inbox:setsockname("127.0.0.1", 0))
inbox:settimeout(0)
local outbox = assert(socket.udp())
assert(outbox:setpeername(inbox:getsockname()))

fibers.spawn(function()                  -- the timer
  while true do
    sleep.sleep(0.005)
    beats = beats + 1
    outbox:send("beat " .. beats)
  end
end)

fibers.spawn(function()                  -- the socket
  while true do
    pollio.fd_readable(inbox:getfd())    -- this fiber waits; the loop runs on
    while inbox:receive() do heard = heard + 1 end
  end
end)

ticker.start(n, 20,
  function(i) ticks:put(i) end,          -- each tick: a fiber of its own
  function(wt, count)                    -- the blocking question: wt first
    ticks:put("question " .. count)
    wt(answer:get())                     -- the C thread waits until here
    answered:put(true)
  end)

fibers.main(function()
  local timeout = 5 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1)
  while true do
    local v = op.choice(ticks:get_op(), sleep.sleep_op(timeout):wrap(function() return "timeout" end)):perform()
    print(v)
    if v == "timeout" then break end
    if type(v) == "string" then
      answer:put(n .. " ticks seen")
      answered:get()                     -- wt was called: the thread goes on
      break
    end
  end
  -- With N = 0 the question can come before the first beat.
  while heard == 0 do sleep.sleep(0.001) end
  fibers.stop()
end)

print("ticker:", ticker.join())          -- the thread's copy of the answer
print("timer beat:", beats > 0)
print("socket heard:", heard > 0)
print("queue:", dss.queuesize())
