-- darksidesync.channel -- share-nothing channels between Lua states, and
-- from C threads: values put are copied (docs/sessions.md, "Copying values
-- between states"), never shared.
--
-- new([capacity]) -> channel     0 or nil: a rendezvous (a put waits for a
--                                get); n: n values buffered; math.huge:
--                                unbounded
-- ch:put(v) -> true | nil, "closed"
-- ch:get()  -> v | nil, "closed"  (closed, and nothing buffered)
-- ch:close(), ch:closed(), ch:len() (#ch on 5.2+)
--
-- Here put and get block the calling thread: the main state's plain
-- calls. A channel handle is itself a value that can be put in a channel.

local dss = require "darksidesync"
local C = dss._channel

local M = {}

M.new = C.new

return M
