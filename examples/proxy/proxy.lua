-- A TCP proxy built from cosockets, in the shape of Barracuda's documented
-- example: an accept loop; per client a server-side coroutine (the accepted
-- connection) and a client-side coroutine made with ba.socket.event that
-- connects upstream; a disable()/enable() handoff between them; then one
-- read/write loop per direction.
--
--   remora examples/proxy/proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT [name=value...]
--     intf=ADDR       listen address (default 127.0.0.1)
--     mode=lua        relay in Lua (default); mode=pipe: ba.socket.pipe moves the
--                     bytes inside the dispatcher (splice(2) where it can);
--                     mode=buffer: ba.socket.pipe without splice
--     queuelen=N      bytes in flight per direction at most (default 65536)
--     timeout=MS      upstream connect timeout (default 3000)
--     idle=MS         close a pair silent both ways this long (default 600000; 0: never)
local opts = {port = tonumber(arg[1]), host = arg[2], upstream = tonumber(arg[3]),
              intf = "127.0.0.1", mode = "lua", queuelen = 65536, timeout = 3000, idle = 600000}
for i = 4, #arg do
  local k, v = arg[i]:match("^(%w+)=(.*)$")
  if not k or opts[k] == nil then error("unknown option " .. arg[i]) end
  opts[k] = type(opts[k]) == "number" and assert(tonumber(v), arg[i]) or v
end
if not (opts.port and opts.host and opts.upstream) then
  error("usage: proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT [intf= mode=lua|pipe|buffer queuelen= timeout= idle=]")
end
assert(opts.mode == "lua" or opts.mode == "pipe" or opts.mode == "buffer", "mode must be lua, pipe or buffer")

-- Every read makes a string of up to 256 KiB that is garbage one loop turn
-- later. In generational mode a minor collection frees it while it is young,
-- so the allocator hands the same few blocks back, still in the CPU's cache;
-- the incremental default lets several megabytes of dead strings build up
-- and marks the whole heap again every few reads.
collectgarbage("generational")

-- One direction: read from source, write to sink until the source ends.
-- Returns nil at end of stream, else the reason it failed. pair.last is when
-- either direction last moved data: a read times out only when both are idle.
local function webProxy(source, sink, pair)
  local idle = opts.idle > 0 and opts.idle or nil
  while true do
    local data, err = source:read(idle)
    if data then
      pair.last = ba.clock()
      local ok, werr = sink:write(data)
      if not ok then return werr or "socketwritefailed" end
    elseif err ~= "timeout" then
      return err ~= "socketclosed" and err or nil
    elseif ba.clock() - pair.last >= opts.idle then
      return "idle for " .. opts.idle .. " ms"
    end
  end
end

-- A direction is over. End of stream half-closes the sink after its queue,
-- so the other direction goes on; a failure closes both sockets. Either way
-- the first direction to end waits for the second: a coroutine's socket
-- closes when the coroutine ends, and the other direction still writes to it.
local function relay(own, other, pair)
  local err = webProxy(own, other, pair)
  if err then
    if err ~= "sysshutdown" then trace("proxy: " .. err .. "; closing both sides") end
    own:close()
    other:close()
  else
    other:shutdown()
  end
  if pair.waiting then
    pair.waiting:enable()   -- the other direction ended first: release it
  else
    pair.waiting = own
    own:disable()           -- until the other direction ends (or the socket closes)
  end
end

-- The client side: connects upstream, hands its socket to the server side,
-- then relays upstream -> client.
local function clientSide(up, server)
  local ok, err = ba.socket.connect(opts.host, opts.upstream, {timeout = opts.timeout})
  if not ok then
    trace("proxy: upstream " .. opts.host .. ":" .. opts.upstream .. ": " .. err)
    server:enable()         -- no socket: the server side closes the client
    return
  end
  up:queuelen(opts.queuelen)
  local pair = {last = ba.clock()}
  server:enable(up, pair)
  if opts.mode ~= "lua" then
    up:disable()            -- pipe() takes the socket over; this coroutine then ends
    return
  end
  up:setoption("halfclose", true)
  relay(up, server, pair)
end

-- The server side: the accepted client's coroutine.
local function serverSide(client)
  client:queuelen(opts.queuelen)
  if not ba.socket.event(clientSide, client) then return end
  local up, pair = client:disable()   -- until the client side has connected
  if not up then return end
  if opts.mode ~= "lua" then
    local ok, err = ba.socket.pipe(client, up, {splice = opts.mode == "pipe", idle = opts.idle})
    if not ok and err ~= "sysshutdown" then trace("proxy: " .. err .. "; closed both sides") end
    return
  end
  client:setoption("halfclose", true)
  relay(client, up, pair)
end

local listener = assert(ba.socket.bind(opts.port, {intf = opts.intf}))
listener:event(function(l)
  while true do
    local s = l:accept()
    if not s then break end
    s:event(serverSide, "s")
  end
end)
print(string.format("proxy on %s:%d -> %s:%d (%s)", opts.intf, opts.port, opts.host, opts.upstream, opts.mode))
