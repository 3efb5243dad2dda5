-- darksidesync.fibers.epoll -- lua-fibers' low-level epoll module, over
-- darksidesync.poller (so no luaposix and no FFI; poll(2) where epoll is
-- missing). Interests are one-shot: an fd is reported once per add. Most
-- code wants darksidesync.fibers.pollio's ops instead. See docs/fibers.md.

local dss = require "darksidesync"

local POLL = dss.POLL

local M = {
  RD = POLL.IN + POLL.RDHUP,
  WR = POLL.OUT,
  RDWR = POLL.IN + POLL.RDHUP + POLL.OUT,
  ERR = POLL.ERR + POLL.HUP,
  PRI = POLL.PRI,
}

local Epoll = {}
Epoll.__index = Epoll

-- new([backend]): an epoll set ("epoll" or "poll"; default epoll where the
-- system has it). Raises when it cannot be made.
function M.new(backend)
  local p, err = dss.poller(backend)
  if not p then error(err, 2) end
  return setmetatable({ poller = p, out = {} }, Epoll)
end

-- ep:add(fd, events): adds events (RD, WR, RDWR, PRI) to fd's one-shot
-- interest. Raises on failure (a closed fd, a regular file under epoll).
function Epoll:add(fd, events)
  assert(self.poller:add(fd, events, true))
end

-- ep:del(fd): forgets fd; true, or nil and a message when it was unknown.
function Epoll:del(fd)
  return self.poller:del(fd)
end

-- ep:poll([timeout_ms]): waits up to timeout_ms milliseconds (default 0;
-- negative: no limit); returns a table fd -> event mask (empty on timeout
-- or when a signal interrupted the wait).
function Epoll:poll(timeout_ms)
  timeout_ms = timeout_ms or 0
  local t = timeout_ms < 0 and -1 or timeout_ms / 1000
  local n, out = self.poller:wait(t, self.out)
  if not n then error(out, 2) end
  local events = {}
  for i = 1, 2 * n, 2 do events[out[i]] = out[i + 1] end
  return events
end

function Epoll:close()
  self.poller:close()
end

return M
