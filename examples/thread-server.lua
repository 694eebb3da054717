-- The thread-per-connection server of Barracuda's documentation: an accept
-- coroutine hands each connection to the worker pool, where a blocking read
-- and write serve a plain HTTP/1.0 reply. Try: curl http://127.0.0.1:9092/
local port = tonumber(arg[1]) or 9092
if arg[2] then ba.thread.configure(tonumber(arg[2])) end

local function webServer(s)   -- runs on a worker thread: s blocks there
  local data = s:read(2000)   -- the request (ignored)
  local msg = "Hello World!"
  s:write(string.format("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", #msg, msg))
  s:close()
end

ba.socket.bind(port):event(function(listener)
  while true do
    local s = listener:accept()
    if not s then break end
    ba.thread.run(function() webServer(s) end)
  end
end)
print("thread server on port " .. port)
