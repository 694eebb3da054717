-- An HTTP static file server on ba.socket alone, in the spirit of TINN's
-- raw-socket examples: read the request head, serve one file, close.
-- No HTTP library: the point is how little a cosocket needs.
--   remora examples/http-raw.lua [PORT] [DIR]      then: curl localhost:8080/
local port, root = tonumber(arg[1]) or 8080, arg[2] or "."
local types = {html = "text/html", htm = "text/html", css = "text/css", js = "text/javascript",
               txt = "text/plain", json = "application/json", png = "image/png", jpg = "image/jpeg",
               gif = "image/gif", svg = "image/svg+xml", lua = "text/plain"}
local MAX_HEAD = 8192

local function head(s, status, ctype, len)
  return s:write(string.format("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                               status, ctype, len))
end

local function fail(s, status)
  head(s, status, "text/plain", #status + 1)
  s:write(status .. "\n")
end

-- The file behind a request target, or nil: no dot segments (.., hidden files).
local function open(target)
  local path = target:gsub("[?#].*", ""):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  if path:find("/%.") or path:find("[%z\\]") then return nil end
  if path:sub(-1) == "/" then path = path .. "index.html" end
  local f = io.open(root .. path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:seek("set")
  local first = f:read(65536)
  if size ~= 0 and not first then f:close() return nil end   -- a directory opens, but does not read
  return f, size, first or "", types[path:match("%.(%w+)$") or ""] or "application/octet-stream"
end

local function serve(s)
  local req = ""
  while not req:find("\r\n\r\n", 1, true) do
    if #req > MAX_HEAD then return fail(s, "431 Request Header Fields Too Large") end
    local data = s:read(10000)
    if not data then return end            -- gone or silent: the socket closes with us
    req = req .. data
  end
  local method, target = req:match("^(%u+) (/%S*) HTTP/1%.%d\r\n")
  if not method then return fail(s, "400 Bad Request") end
  if method ~= "GET" and method ~= "HEAD" then return fail(s, "405 Method Not Allowed") end
  local f, size, chunk, ctype = open(target)
  if not f then return fail(s, "404 Not Found") end
  head(s, "200 OK", ctype, size)
  while method == "GET" and chunk ~= "" and s:write(chunk) do   -- write suspends while the client is slow
    chunk = f:read(65536) or ""
  end
  f:close()
end

ba.socket.bind(port, {intf = "127.0.0.1"}):event(function(l)
  while true do
    local s = l:accept()
    if not s then break end
    s:event(serve, "s")
  end
end)
print("http-raw on 127.0.0.1:" .. port .. " serving " .. root)
