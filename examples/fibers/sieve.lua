-- sieve.lua -- Go's concurrent prime sieve with darksidesync.fibers: a
-- generator fiber sends 2, 3, 4, ... down an unbuffered channel; each prime
-- found adds a filter fiber to the chain that drops that prime's multiples.
-- Prints the first N primes (arg 1, default 10), one a line, then stops.
--
--   lua sieve.lua [N]

local fibers = require "darksidesync.fibers"
local channel = require "darksidesync.fibers.channel"

local n = tonumber(arg and arg[1]) or 10

-- generate(ch): sends 2, 3, 4, ... to ch.
local function generate(ch)
  local i = 2
  while true do ch:put(i); i = i + 1 end
end

-- filter(inp, out, prime): copies the values from inp to out, dropping
-- those divisible by prime.
local function filter(inp, out, prime)
  while true do
    local i = inp:get()
    if i % prime ~= 0 then out:put(i) end
  end
end

fibers.main(function()
  local ch = channel.new()
  fibers.spawn(generate, ch)
  for _ = 1, n do
    local prime = ch:get()
    print(prime)
    local ch1 = channel.new()
    fibers.spawn(filter, ch, ch1, prime)
    ch = ch1
  end
  fibers.stop()   -- the generator and the filters stay blocked: no matter
end)
