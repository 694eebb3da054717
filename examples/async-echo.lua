-- The asynchronous echo of Barracuda's documentation: the socket's coroutine
-- reads; each write is deferred to a worker thread, which may block without
-- stalling the dispatcher.
local port = tonumber(arg[1]) or 9093
local function echo(sock)
  local q = ba.thread.create()    -- one queue per connection keeps the replies in order
  while true do
    local data = sock:read()
    if not data then break end
    q:run(function() sock:write(data) end)
  end
end
ba.socket.bind(port):event(function(listener)
  while true do
    local s = listener:accept()
    if not s then break end
    s:event(echo)
  end
end)
print("async echo on port " .. port)
