-- share.lua: one X display, any number of viewers, each at its own pace.
--
-- A repeating timer polls the display (scr:poll drains X events and grabs
-- what XDamage reported; it never waits for anything but the local X
-- server). Every viewer has two coroutines:
--   * the pusher loops frame -> write. ws:write suspends it while the
--     socket's queue is over its bound, so the next frame is only made once
--     the previous one went to the kernel: a slow viewer gets fewer, fresher
--     frames and never a growing queue. With nothing new it parks itself
--     (disable) until the poller sees a change and wakes it (enable).
--   * the reader takes input messages and hands them to scr:input; a bad
--     one closes this viewer with the code scr:input gives (1007, 1009).
-- Either one ending ends the other; a viewer that disconnects mid-frame
-- leaves nothing behind.
local screen = require "screen"

local M = {}

local function env_int(name, default, lo, hi)
  local v = tonumber(os.getenv(name) or "")
  if v == nil then return default end
  v = math.tointeger(v)
  if not v or v < lo or v > hi then error(name .. " must be an integer in " .. lo .. ".." .. hi, 0) end
  return v
end

local PING = 5   -- the only input message a view-only viewer may send

function M.new(display)
  local scr, err = screen.open(display)
  if not scr then return nil, err end
  local self = setmetatable({
    scr = scr,
    parked = {},    -- pusher socket -> true while it waits for a change
    count = 0,      -- viewers connected
    poll_ms = env_int("SCREENSHARE_POLL_MS", 10, 1, 1000),
    max_viewers = env_int("SCREENSHARE_MAX_VIEWERS", 16, 1, 1000),
    quality = env_int("SCREENSHARE_QUALITY", 75, 1, 100),
    queuelen = env_int("SCREENSHARE_QUEUE", 64 * 1024, 4096, 16 * 1024 * 1024),
    max_input = 256 * 1024 + 8,   -- the largest valid message: a full clipboard
  }, {__index = M})
  self.timer = ba.timer(function() return self:tick() end)
  self.timer:set(self.poll_ms)
  return self
end

-- The poll timer: a change wakes every parked pusher.
function M:tick()
  local changed, err = self.scr:poll()
  if changed == nil then
    trace("screenshare: " .. tostring(err) .. "; viewers are disconnected")
    for pusher in pairs(self.parked) do pusher:close() end
    return false
  end
  if changed then
    for pusher in pairs(self.parked) do pusher:enable(true) end
  end
  return true
end

local function pusher_loop(self, ws, v)
  return function(me)
    while true do
      local msg = v:frame()
      if msg then
        if not ws:write(msg) then break end
      else
        self.parked[me] = true
        local go = me:disable()
        self.parked[me] = nil
        if not go then break end
      end
    end
    ws:close()
  end
end

local function reader_loop(self, role, viewer)
  return function(ws)
    while true do
      local data, is_text = ws:read()
      if not data then break end
      if is_text then ws:close(1003, "binary messages only") break end
      if role == "control" or data:byte(1) == PING then
        local ok, reply, code = self.scr:input(data)
        if ok == nil then
          trace("screenshare: viewer closed: " .. reply)
          ws:close(code, reply)
          break
        end
        if reply and not ws:write(reply) then break end
      end
    end
    if viewer.pusher then viewer.pusher:close() end
    self.count = self.count - 1
  end
end

-- Serves one viewer on the request's WebSocket. When refused: false, HTTP
-- status, reason (req2sock answers a refused upgrade itself: status nil).
function M:serve(request, role, origins)
  if (request:header("Upgrade") or ""):lower() ~= "websocket" then
    return false, 400, "a WebSocket upgrade request is expected"
  end
  if self.count >= self.max_viewers then return false, 503, "too many viewers" end
  local ws = ba.socket.req2sock(request, {origins = origins, max_message = self.max_input,
                                          max_frame = self.max_input})
  if not ws then return false end
  ws:queuelen(self.queuelen)
  self.count = self.count + 1
  local viewer = {}
  ws:event(reader_loop(self, role, viewer), "s")
  viewer.pusher = ba.socket.event(pusher_loop(self, ws, self.scr:viewer{quality = self.quality}))
  return true
end

return M
