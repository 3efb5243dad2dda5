-- workers.lua -- Go's worker pool with darksidesync.fibers: W worker
-- fibers take jobs from a jobs channel and send their results to a results
-- channel; a waitgroup tells when every worker has finished, and then the
-- results channel is closed. Prints the results in job order.
--
--   lua workers.lua [JOBS [WORKERS]]

local fibers = require "darksidesync.fibers"
local channel = require "darksidesync.fibers.channel"
local sleep = require "darksidesync.fibers.sleep"
local waitgroup = require "darksidesync.fibers.waitgroup"

local njobs = tonumber(arg and arg[1]) or 9
local nworkers = tonumber(arg and arg[2]) or 3

local function worker(id, jobs, results, wg)
  while true do
    local j = jobs:get()
    if j == nil then break end           -- jobs closed and drained
    sleep.sleep(0.001 * (j % 3))         -- some work
    results:put({ job = j, result = j * 2, worker = id })
  end
  wg:done()
end

fibers.main(function()
  local jobs, results = channel.new(njobs), channel.new()
  local wg = waitgroup.new()
  for w = 1, nworkers do
    wg:add(1)
    fibers.spawn(worker, w, jobs, results, wg)
  end
  for j = 1, njobs do jobs:put(j) end
  jobs:close()
  fibers.spawn(function() wg:wait(); results:close() end)

  local got, by = {}, {}
  while true do
    local r = results:get()
    if r == nil then break end           -- every worker is done
    got[#got + 1] = r
    by[r.worker] = (by[r.worker] or 0) + 1
  end
  table.sort(got, function(a, b) return a.job < b.job end)
  for _, r in ipairs(got) do print("job " .. r.job .. " -> " .. r.result) end
  local busy = 0
  for w = 1, nworkers do if by[w] then busy = busy + 1 end end
  print(#got .. " results, " .. busy .. " of " .. nworkers .. " workers busy")
  fibers.stop()
end)
