-- select.lua -- Go's select, with darksidesync.fibers:
--   * select with a timeout: choice(ch:get_op(), sleep_op(dt)), each arm
--     wrapped to say which one won;
--   * select with a default: op:perform_alt(f) returns f() at once when no
--     arm is ready (Go's `default:` case).
--
--   lua select.lua

local fibers = require "darksidesync.fibers"
local channel = require "darksidesync.fibers.channel"
local sleep = require "darksidesync.fibers.sleep"
local op = require "darksidesync.fibers.op"

-- after(dt, v): a channel that receives v after dt seconds (a slow call).
local function after(dt, v)
  local ch = channel.new(1)
  fibers.spawn(function() sleep.sleep(dt); ch:put(v) end)
  return ch
end

-- with_timeout(ch, dt): ch's value, or "timeout" after dt seconds.
local function with_timeout(ch, dt)
  return op.choice(
    ch:get_op():wrap(function(v) return "result " .. v end),
    sleep.sleep_op(dt):wrap(function() return "timeout" end)
  ):perform()
end

fibers.main(function()
  print(with_timeout(after(0.5, "slow"), 0.05))  -- the timer wins
  print(with_timeout(after(0.02, "fast"), 2))    -- the value wins

  local messages = channel.new(1)
  local function receive()
    return messages:get_op():wrap(function(m) return "received " .. m end)
      :perform_alt(function() return "no message received" end)
  end
  print(receive())                               -- nothing ready: the default
  messages:put("hi")
  print(receive())
  local sent = messages:put_op("again"):wrap(function() return "sent again" end)
    :perform_alt(function() return "no message sent" end)
  print(sent)                                    -- room in the buffer
  sent = messages:put_op("full"):wrap(function() return "sent full" end)
    :perform_alt(function() return "no message sent" end)
  print(sent)                                    -- buffer full: the default
  fibers.stop()
end)
