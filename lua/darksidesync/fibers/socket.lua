-- darksidesync.fibers.socket -- LuaSocket TCP and UDP sockets for fibers.
-- The LuaSocket object is set to settimeout(0); a call that would block
-- waits for the fd's readiness (darksidesync.fibers.pollio) and tries
-- again, suspending only its fiber. Every blocking call is also an op
-- (receive_op, send_op, accept_op, connect_op, ...), so timeouts compose
-- with choice. See docs/fibers.md.
--
-- The retry model: each call is a "job" with
--   attempt()  -> done, results...   never blocks; commits only when done
--   expire()   -> results            the timeout's results (LuaSocket's)
--   write      true: waits for writability, else readability
-- A TCP receive reads what is available into the wrapper's own read buffer
-- and takes from that buffer only when its pattern is complete, so a
-- receive op that loses a choice leaves every byte for the next receive.

local core = require "socket"
local dss = require "darksidesync"
local op = require "darksidesync.fibers.op"
local fiber = require "darksidesync.fibers.fiber"
local sleep = require "darksidesync.fibers.sleep"
local pollio = require "darksidesync.fibers.pollio"

local M = {}

local unpack = unpack or table.unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local concat = table.concat
local POLL = dss.POLL

local CHUNK = 65536 -- bytes asked of LuaSocket per read

local Tcp, Udp = {}, {}

-- Methods not defined here are LuaSocket's, called on the inner socket
-- (getsockname, setoption, getfd, ...); other fields too (class).
local function make_index(class)
  local forwarders = {}
  return function(self, k)
    local m = class[k]
    if m ~= nil then return m end
    local v = rawget(self, "sock")[k]
    if type(v) ~= "function" then return v end
    local f = forwarders[k]
    if f == nil then
      f = function(s, ...) local inner = s.sock; return inner[k](inner, ...) end
      forwarders[k] = f
    end
    return f
  end
end

local TcpMT = { __index = make_index(Tcp) }
local UdpMT = { __index = make_index(Udp) }
TcpMT.__tostring = function(self) return tostring(self.sock) end
UdpMT.__tostring = TcpMT.__tostring

---------------------------------------------------------------------------
-- Waiting for readiness.

-- A stand-in suspension handed to pollio: when the fd is ready it runs the
-- attempt; done, it completes the real suspension s, else it waits again.
--
-- The attempt commits (takes bytes, sends, accepts) when it is done, so it
-- runs with s held (op.lua, Suspension:hold): a channel arm of the same
-- choice cannot win between the attempt and the completion, which would
-- lose what the attempt took.
local function io_op(self, job)
  local attempt, write = job.attempt, job.write
  return op.new_base_op(nil, attempt, function(s, wrap)
    local proxy = {}
    local register
    -- One attempt with s held: completes s when done (or failed, or when
    -- there is no fd to wait for), else lets s go and waits again.
    local function attempt_packed() return pack(attempt()) end
    local function try_held(no_fd)
      if not s:hold() then return end
      -- Nothing between hold and complete/release may raise outside the
      -- pcall (not even pack running out of memory): the hold would stay.
      local okp, r = pcall(attempt_packed)
      if not okp then return s:complete(error, r, 0) end
      if r[1] then return s:complete(wrap, unpack(r, 2, r.n)) end
      if no_fd then return s:complete(wrap, nil, "closed") end
      s:release()
      return register()
    end
    function register()
      local fd = self.sock:getfd()
      -- No fd (closed meanwhile): the attempt will see it.
      if fd == nil or fd < 0 then return try_held(true) end
      pollio.wait_fd(fd, write, proxy)
    end
    function proxy.waiting() return s:waiting() end
    function proxy.complete()
      if s:waiting() then try_held(false) end
    end
    register()
  end)
end

-- Outside a fiber: the thread blocks in a private poller (LuaSocket's own
-- behaviour with its timeout).
local thread_poller
local function thread_wait(self, job, t)
  local deadline = t and dss.monotime() + t
  if not thread_poller then thread_poller = assert(dss.poller()) end
  local mask = job.write and POLL.OUT or (POLL.IN + POLL.RDHUP)
  while true do
    local remaining = deadline and deadline - dss.monotime()
    if remaining and remaining <= 0 then return job.expire() end
    local fd = self.sock:getfd()
    if fd and fd >= 0 and thread_poller:add(fd, mask, true) then
      thread_poller:wait(remaining or -1)
      thread_poller:del(fd)
    end
    local r = pack(job.attempt())
    if r[1] then return unpack(r, 2, r.n) end
  end
end

local function after_first(self, job, done, ...)
  if done then return ... end
  local t = self.timeout
  if t and t <= 0 then return job.expire() end
  if fiber.current_fiber() == nil then return thread_wait(self, job, t) end
  local o = io_op(self, job)
  if t then o = op.choice(o, sleep.sleep_op(t):wrap(job.expire)) end
  return o:perform()
end

-- The blocking form of a job: op:perform() of its op, with self.timeout.
local function blocking(self, job)
  return after_first(self, job, job.attempt())
end

-- expire(job, fallback): the timeout's results: a last attempt, else
-- fallback().
local function make_expire(attempt, fallback)
  return function()
    local r = pack(attempt())
    if r[1] then return unpack(r, 2, r.n) end
    return fallback()
  end
end

---------------------------------------------------------------------------
-- The TCP read buffer: rbuf (a string) from rpos, then parts (strings
-- read after it, plen bytes); rscan leading bytes are known to hold no
-- newline; rerr: an end or error LuaSocket reported, not yet returned.

local function buffered(self)
  return #self.rbuf - self.rpos + 1 + self.plen
end

local function flatten(self)
  local parts = self.parts
  if #parts > 0 then
    self.rbuf = self.rbuf:sub(self.rpos) .. concat(parts)
    self.rpos = 1
    self.parts, self.plen = {}, 0
  end
end

-- take(k): the next k buffered bytes, removed.
local function take(self, k)
  if k > #self.rbuf - self.rpos + 1 then flatten(self) end
  local rpos = self.rpos
  local s = self.rbuf:sub(rpos, rpos + k - 1)
  rpos = rpos + k
  if rpos > #self.rbuf then
    self.rbuf, self.rpos = "", 1
  else
    self.rpos = rpos
  end
  self.rscan = self.rscan > k and self.rscan - k or 0
  return s
end

local function take_all(self)
  return take(self, buffered(self))
end

-- The number of buffered bytes up to and including the first newline, or
-- nil.
local function find_newline(self)
  local skip = self.rscan
  local base = 0
  local head = #self.rbuf - self.rpos + 1
  if skip < head then
    local e = self.rbuf:find("\n", self.rpos + skip, true)
    if e then return e - self.rpos + 1 end
  end
  base = head
  for _, p in ipairs(self.parts) do
    local n = #p
    if skip < base + n then
      local from = skip > base and skip - base + 1 or 1
      local e = p:find("\n", from, true)
      if e then return base + e end
    end
    base = base + n
  end
  self.rscan = base
  return nil
end

-- Reads one chunk into the buffer: "more" (a whole chunk came: there may
-- be more), "wait" (nothing more now), "end" (rerr set).
local function read_some(self)
  local data, err, partial = self.sock:receive(CHUNK)
  local got = data or partial
  if got and #got > 0 then
    self.parts[#self.parts + 1] = got
    self.plen = self.plen + #got
  end
  if data then return "more" end
  if err == "timeout" then return "wait" end
  self.rerr = err
  return "end"
end

local function strip_cr(s)
  return (s:gsub("\r", ""))
end

-- The pattern: "l", "a" or a byte count.
local function check_pattern(pattern)
  if pattern == nil then return "l" end
  if type(pattern) == "number" or (type(pattern) == "string" and tonumber(pattern)) then
    local n = tonumber(pattern)
    if n >= 0 then return math.floor(n) end
  elseif type(pattern) == "string" then
    local c = pattern:match("^%*?(.)")
    if c == "l" or c == "a" then return c end
  end
  error("bad argument #1 to 'receive' (invalid receive pattern)", 3)
end

local function check_prefix(prefix)
  if prefix == nil then return "" end
  if type(prefix) == "number" then return tostring(prefix) end
  if type(prefix) ~= "string" then
    error("bad argument #2 to 'receive' (string expected, got " .. type(prefix) .. ")", 3)
  end
  return prefix
end

-- From the buffer alone: done, results... (an end or error LuaSocket
-- reported ends the pattern as LuaSocket would).
local function match(self, mode, prefix)
  if mode == "l" then
    local k = find_newline(self)
    if k then return true, prefix .. strip_cr(take(self, k):sub(1, -2)) end
  elseif mode ~= "a" then
    local want = mode - #prefix
    if want <= 0 and (#prefix > 0 or mode == 0) then return true, prefix end
    if buffered(self) >= want then return true, prefix .. take(self, want) end
  end
  local err = self.rerr
  if err == nil then return false end
  self.rerr = nil
  if mode == "a" and err == "closed" and buffered(self) > 0 then
    return true, prefix .. take_all(self)
  end
  local partial = take_all(self)
  if mode == "l" then partial = strip_cr(partial) end
  return true, nil, err, prefix .. partial
end

local function receive_job(self, pattern, prefix)
  local mode = check_pattern(pattern)
  prefix = check_prefix(prefix)
  local function attempt()
    if self.closed then return true, nil, "closed", prefix end
    while true do
      local r = pack(match(self, mode, prefix))
      if r[1] then return unpack(r, 1, r.n) end
      local st = read_some(self)
      if st == "wait" then return match(self, mode, prefix) end
    end
  end
  local expire = make_expire(attempt, function()
    local partial = take_all(self)
    if mode == "l" then partial = strip_cr(partial) end
    return nil, "timeout", prefix .. partial
  end)
  return { attempt = attempt, expire = expire, write = false }
end

---------------------------------------------------------------------------
-- TCP.

local function new_tcp(sock)
  sock:settimeout(0)
  return setmetatable({
    sock = sock, kind = "tcp", timeout = nil, closed = false,
    rbuf = "", rpos = 1, parts = {}, plen = 0, rscan = 0, rerr = nil,
  }, TcpMT)
end

local function new_udp(sock)
  sock:settimeout(0)
  return setmetatable({ sock = sock, kind = "udp", timeout = nil, closed = false }, UdpMT)
end

-- wrap(luasocket_object): the fiber-aware wrapper of a LuaSocket TCP or UDP
-- socket (a wrapper is returned as it is).
function M.wrap(sock)
  local mt = getmetatable(sock)
  if mt == TcpMT or mt == UdpMT then return sock end
  local kind = (type(sock) == "userdata" and tostring(sock):match("^(%a+)")) or nil
  if kind == "tcp" then return new_tcp(sock) end
  if kind == "udp" then return new_udp(sock) end
  error("bad argument #1 to 'wrap' (LuaSocket tcp or udp object expected, got " ..
        (type(sock) == "userdata" and tostring(sock) or type(sock)) .. ")", 2)
end

local function creator(fn, new)
  return function(...)
    local s, err = fn(...)
    if not s then return nil, err end
    return new(s)
  end
end

M.tcp = creator(core.tcp, new_tcp)
M.udp = creator(core.udp, new_udp)
if core.tcp4 then M.tcp4 = creator(core.tcp4, new_tcp) end
if core.tcp6 then M.tcp6 = creator(core.tcp6, new_tcp) end
if core.udp4 then M.udp4 = creator(core.udp4, new_udp) end
if core.udp6 then M.udp6 = creator(core.udp6, new_udp) end

-- bind(host, port [, backlog]): a listening wrapped TCP socket (LuaSocket's
-- socket.bind: reuseaddr set, backlog default 32).
function M.bind(host, port, backlog)
  local s, err = core.bind(host, port, backlog)
  if not s then return nil, err end
  return new_tcp(s)
end

-- connect(host, port [, locaddr [, locport [, family]]]): a connected
-- wrapped TCP socket, or nil, err. Blocks the calling fiber only.
function M.connect(host, port, locaddr, locport, family)
  local mk = core.tcp
  if family == "inet" then mk = core.tcp4 or core.tcp
  elseif family == "inet6" then mk = core.tcp6 or core.tcp end
  local s, err = mk()
  if not s then return nil, err end
  local t = new_tcp(s)
  if locaddr then
    local okb, berr = s:bind(locaddr, locport or 0)
    if not okb then s:close(); return nil, berr end
  end
  local okc, cerr = t:connect(host, port)
  if not okc then t:close(); return nil, cerr end
  return t
end

-- settimeout(t [, mode]): t seconds for each blocking call (nil or
-- negative: none). The mode is accepted and ignored: the timeout is always
-- per call.
local function settimeout(self, t)
  t = tonumber(t)
  if t and t >= 0 then self.timeout = t else self.timeout = nil end
  return 1
end
Tcp.settimeout, Udp.settimeout = settimeout, settimeout

local function gettimeout(self)
  return self.timeout or -1, -1
end
Tcp.gettimeout, Udp.gettimeout = gettimeout, gettimeout

-- close(): wakes the fibers waiting on it (they return nil, "closed") and
-- closes the LuaSocket object.
local function close(self)
  if not self.closed then
    self.closed = true
    if self.kind == "tcp" then
      self.rbuf, self.rpos, self.parts, self.plen, self.rscan, self.rerr = "", 1, {}, 0, 0, nil
    end
    local fd = self.sock:getfd()
    if fd and fd >= 0 then pollio.fd_closed(fd) end
  end
  return self.sock:close()
end
Tcp.close, Udp.close = close, close

-- getsocket(): the LuaSocket object inside.
function Tcp:getsocket() return self.sock end
Udp.getsocket = Tcp.getsocket

function Tcp:dirty()
  return buffered(self) > 0 or self.sock:dirty()
end

function Tcp:receive_op(pattern, prefix)
  return io_op(self, receive_job(self, pattern, prefix))
end

function Tcp:receive(pattern, prefix)
  return blocking(self, receive_job(self, pattern, prefix))
end

-- send: progress kept per performance (a guard makes a fresh job).
local function check_data(data, name)
  if type(data) == "number" then return tostring(data) end
  if type(data) ~= "string" then
    error("bad argument #1 to '" .. name .. "' (string expected, got " .. type(data) .. ")", 3)
  end
  return data
end

local function send_job(self, data, i, j)
  local len = #data
  i, j = math.floor(tonumber(i) or 1), math.floor(tonumber(j) or -1)
  if i < 0 then i = len + i + 1 end
  if j < 0 then j = len + j + 1 end
  if i < 1 then i = 1 end
  if j > len then j = len end
  local pos, last = i, i - 1
  local function attempt()
    if self.closed then return true, nil, "closed", last end
    local sent, err, partial = self.sock:send(data, pos, j)
    if sent then return true, sent end
    if err == "timeout" then
      last, pos = partial, partial + 1
      return false
    end
    return true, nil, err, partial
  end
  local expire = make_expire(attempt, function() return nil, "timeout", last end)
  return { attempt = attempt, expire = expire, write = true }
end

function Tcp:send_op(data, i, j)
  data = check_data(data, "send_op")
  return op.guard(function() return io_op(self, send_job(self, data, i, j)) end)
end

function Tcp:send(data, i, j)
  data = check_data(data, "send")
  return blocking(self, send_job(self, data, i, j))
end

local function accept_job(self)
  local function attempt()
    if self.closed then return true, nil, "closed" end
    local c, err = self.sock:accept()
    if c then return true, new_tcp(c) end
    if err == "timeout" then return false end
    return true, nil, err
  end
  return { attempt = attempt, expire = make_expire(attempt, function() return nil, "timeout" end) }
end

function Tcp:accept_op()
  return io_op(self, accept_job(self))
end

function Tcp:accept()
  return blocking(self, accept_job(self))
end

local function connect_job(self, host, port)
  local started = false
  local function attempt()
    if self.closed then return true, nil, "closed" end
    local okc, err = self.sock:connect(host, port)
    if okc then return true, okc end
    if err == "timeout" or (started and err:lower():find("already in progress", 1, true)) then
      started = true
      return false
    end
    if started and err == "already connected" then return true, 1 end
    return true, nil, err
  end
  return { attempt = attempt, expire = make_expire(attempt, function() return nil, "timeout" end),
           write = true }
end

function Tcp:connect_op(host, port)
  return op.guard(function() return io_op(self, connect_job(self, host, port)) end)
end

function Tcp:connect(host, port)
  return blocking(self, connect_job(self, host, port))
end

---------------------------------------------------------------------------
-- UDP: datagrams are whole, so nothing is buffered.

local function udp_job(self, write, call)
  local function attempt()
    if self.closed then return true, nil, "closed" end
    local r = pack(call(self.sock))
    if r[1] ~= nil then return true, unpack(r, 1, r.n) end
    if r[2] == "timeout" then return false end
    return true, unpack(r, 1, r.n)
  end
  return { attempt = attempt, expire = make_expire(attempt, function() return nil, "timeout" end),
           write = write }
end

local function udp_method(name, write)
  local function job(self, ...)
    local args = pack(...)
    return udp_job(self, write, function(s) return s[name](s, unpack(args, 1, args.n)) end)
  end
  Udp[name] = function(self, ...) return blocking(self, job(self, ...)) end
  Udp[name .. "_op"] = function(self, ...)
    local args = pack(...)
    return op.guard(function() return io_op(self, job(self, unpack(args, 1, args.n))) end)
  end
end

udp_method("receive", false)
udp_method("receivefrom", false)
udp_method("send", true)
udp_method("sendto", true)

return M
