-- demo.lua -- darksidesync in a real event loop. Run it with `make demo`.
--
-- A Copas loop sleeps on the `dss` helper's UDP socket. Background threads
-- of two client libraries wake it:
--   * dss_resolver looks names up on a small thread pool and delivers the
--     results (fire and forget); when a lookup fails, its worker thread asks
--     Lua whether to retry and *blocks* until Lua answers;
--   * dss_signal turns SIGINT / SIGTERM into Lua callbacks, so Ctrl-C ends
--     the loop cleanly.
-- A timer in the loop ticks all along, to show the loop never blocks.
--
-- Environment: DEMO_STAY=1 keeps the loop running after the last lookup,
-- until a signal arrives.

local copas = require "copas"
local socket = require "socket"
local darksidesync = require "darksidesync"
local dss = require "dss"
local resolver = require "dss_resolver"
local signal = require "dss_signal"

local t0 = socket.gettime()
local function now() return (socket.gettime() - t0) * 1000 end
local function say(fmt, ...)
  io.write(("%8.1f ms  "):format(now()), fmt:format(...), "\n")
  io.flush()
end

-- The names to look up: localhost, the names in /etc/hosts, and one under
-- the reserved .invalid domain that always fails (to show the retry dialogue).
local function host_names(limit)
  local names, seen = { "localhost" }, { localhost = true }
  local f = io.open("/etc/hosts")
  if f then
    for line in f:lines() do
      line = line:gsub("#.*", "")
      local first = true
      for word in line:gmatch("%S+") do
        if first then first = false  -- the address
        elseif not seen[word] and #names < limit then
          seen[word] = true
          names[#names + 1] = word
        end
      end
    end
    f:close()
  end
  return names
end

local names = host_names(8)
names[#names + 1] = "no-such-host.invalid"

print(("darksidesync %s on %s, %s"):format(darksidesync._VERSION,
  rawget(_G, "jit") and jit.version or _VERSION, copas._VERSION or "Copas"))
print(("Looking up %d names on a pool of %d resolver threads; results come back"
  .. " through the Copas loop."):format(#names, resolver.getpoolsize()))
print("Press Ctrl-C to stop early.\n")

-- Wake-ups: every delivered item sends a datagram to this socket.
local skt, port = assert(dss.getsocket())
copas.addserver(skt, function(s)
  s = copas.wrap(s)
  local handler = dss.gethandler()
  while true do handler(s) end
end)
dss.seterrorhandler(function(msg)
  say("!! a callback failed: %s", tostring(msg))
end)
say("listening for wake-ups on udp://127.0.0.1:%d", port)

-- Signals: the handler only writes to a pipe; a watcher thread delivers.
local stop_reason
local function on_signal(name)
  say("received %s: stopping", name)
  stop_reason = name
end
signal.watch("SIGINT", on_signal)
signal.watch("SIGTERM", on_signal)

-- Results and the retry dialogue.
local sent_at, done, resolved, failed = {}, 0, 0, 0

local function on_result(name, addresses, err, attempts)
  local took = now() - sent_at[name]
  done = done + 1
  if addresses then
    resolved = resolved + 1
    say("resolved %-22s -> %s  (%.1f ms)", name, table.concat(addresses, ", "), took)
  else
    failed = failed + 1
    say("failed   %-22s -> %s after %d attempt%s (%.1f ms)", name, err, attempts,
        attempts == 1 and "" or "s", took)
  end
end

local function retry(name, err, attempt)
  local again = attempt < 2
  say("  the resolver thread asks: '%s' failed (%s) on attempt %d; retry?  Lua says %s",
      name, err, attempt, again and "yes" or "no")
  return again
end

-- The loop: one lookup sent every 150 ms, a tick every 250 ms, and Copas
-- waiting for datagrams in between.
local next_send, next_tick, ticks, i = 0, 250, 0, 0
local stay = os.getenv("DEMO_STAY") == "1"
local reported = false
while not stop_reason do
  copas.step(0.02)
  local t = now()
  if t >= next_tick then
    ticks = ticks + 1
    next_tick = next_tick + 250
    say("tick %d (the loop is alive; %d item%s queued)", ticks, dss.queuesize(),
        dss.queuesize() == 1 and "" or "s")
  end
  if i < #names and t >= next_send then
    i = i + 1
    local name = names[i]
    sent_at[name] = t
    resolver.resolve(name, on_result, retry)
    next_send = t + 150
  end
  if done == #names and not reported then
    reported = true
    say("all %d lookups done: %d resolved, %d failed", #names, resolved, failed)
    if not stay then stop_reason = "done" end
  end
end

signal.stop()
resolver.shutdown()
say("clean exit (%s) after %d ticks", stop_reason, ticks)
