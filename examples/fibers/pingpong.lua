-- pingpong.lua -- Go's ping-pong (the "table" talk example) with
-- darksidesync.fibers: two player fibers hit a ball back and forth over one
-- unbuffered channel; each hit increments the ball's count. The player who
-- makes hit N (arg 1, default 10) hands the ball to the main fiber instead,
-- which prints the count and stops.
--
--   lua pingpong.lua [N]

local fibers = require "darksidesync.fibers"
local channel = require "darksidesync.fibers.channel"

local hits = tonumber(arg and arg[1]) or 10

local function player(name, table_, done)
  while true do
    local ball = table_:get()     -- wait for the ball
    ball.hits = ball.hits + 1
    print(name, ball.hits)
    fibers.yield()                -- Go sleeps 100 ms here; a turn will do
    if ball.hits == hits then done:put(ball); return end
    table_:put(ball)              -- hit it back
  end
end

fibers.main(function()
  local table_ = channel.new()    -- unbuffered: a put waits for a get
  local done = channel.new()
  fibers.spawn(player, "ping", table_, done)
  fibers.spawn(player, "pong", table_, done)
  table_:put({ hits = 0 })        -- toss the ball
  local ball = done:get()         -- the game is over
  print("hits", ball.hits)
  fibers.stop()
end)
