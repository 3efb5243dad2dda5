-- test_resolver.lua -- the dss_resolver example client library
-- (examples/resolver): asynchronous getaddrinfo on a thread pool, results
-- delivered fire and forget, retry questions asked with blocking
-- deliveries, shutdown and lua_close with lookups in flight.
--
-- The cases are shared with test_resolver_cpp.lua (the same library over
-- the C++ helper): see resolver_cases.lua.

require("resolver_cases")("dss_resolver")
