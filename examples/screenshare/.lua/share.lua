-- share.lua: one X display, any number of viewers, each at its own pace.
--
-- A repeating timer drains the display's events (scr:drain: what XDamage
-- reported accumulates; it never waits for anything but the local X server).
-- Every viewer has three coroutines:
--   * the pusher loops frame (grab and encode) -> write. ws:write suspends
--     it while the socket's queue is over its bound, so the next frame is
--     only made once the previous one went to the kernel: a slow viewer gets
--     fewer, fresher frames and never a growing queue. With nothing new it
--     parks itself (disable) until the timer sees a change and wakes it
--     (enable).
--   * the echoer sends the overlays of the screen's echo lane (scr:echo): a
--     key's echo, grabbed and sent while the pusher's frame is still being
--     made (docs/screen-protocol.md). It always takes the newest, so a slow
--     viewer skips overlays rather than queueing them.
--   * the reader takes input messages and hands them to scr:input; a bad
--     one closes this viewer with the code scr:input gives (1007, 1009).
-- The reader ending ends the others; a viewer that disconnects mid-frame
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

local BUTTON, KEY = 2, 3
local PING = 5   -- the only input message a view-only viewer may send (and ACK)
local ACK = 6    -- the app's own message: a frame was painted (docs/screenshare.md)

function M.new(display)
  local scr, err = screen.open(display)
  if not scr then return nil, err end
  local self = setmetatable({
    scr = scr,
    parked = {},    -- pusher socket -> true while it waits for a change
    count = 0,      -- viewers connected
    poll_ms = env_int("SCREENSHARE_POLL_MS", 10, 1, 1000),
    max_viewers = env_int("SCREENSHARE_MAX_VIEWERS", 16, 1, 1000),
    quality = env_int("SCREENSHARE_QUALITY", 85, 1, 100),   -- SSIM at least noVNC's (bench/screen)
    inflight = env_int("SCREENSHARE_INFLIGHT", 2, 1, 64),   -- frames sent but not yet painted
    -- ...while someone types: the browser then paints one frame at a time,
    -- and its main thread is free sooner for the echo's overlay (bench/screen)
    typing_inflight = env_int("SCREENSHARE_TYPING_INFLIGHT", 1, 1, 64),
    typing_ms = env_int("SCREENSHARE_TYPING_MS", 1000, 0, 60000),   -- how long after a key or button
    input_at = nil,   -- ba.clock() of the last key or button from any viewer
    queuelen = env_int("SCREENSHARE_QUEUE", 64 * 1024, 4096, 16 * 1024 * 1024),
    max_input = 256 * 1024 + 8,   -- the largest valid message: a full clipboard
    timestamps = os.getenv("SCREENSHARE_TIMESTAMPS") == "1",   -- server time in every frame (tracing)
  }, {__index = M})
  self.timer = ba.timer(function() return self:tick() end)
  self.timer:set(self.poll_ms)
  return self
end

-- The X connection is lost: every viewer is disconnected.
function M:lost(err)
  trace("screenshare: " .. tostring(err) .. "; viewers are disconnected")
  for pusher in pairs(self.parked) do pusher:close() end
  self.dead = true
end

-- The timer drains X events only: the damage they report accumulates until a
-- viewer is ready for a frame, so the screen is grabbed once per frame made,
-- not at every tick while every viewer still has frames in flight. Something
-- drawn wakes every parked pusher.
function M:tick()
  local drawn, err = self.scr:drain()
  if drawn == nil then self:lost(err) return false end
  if drawn and next(self.parked) then
    -- A woken pusher runs at once and may park again: into a fresh table,
    -- since adding keys to the one being traversed is not allowed.
    local woken = self.parked
    self.parked = {}
    for pusher in pairs(woken) do pusher:enable(true) end
  end
  return true
end

-- The next update for viewer v, with what was drawn until now. It is grabbed
-- and encoded on the screen's encoder thread while this coroutine waits, so
-- the dispatcher goes on reading input meanwhile.
function M:frame(v)
  local drawn, err = self.scr:drain()
  if drawn ~= nil then drawn, err = v:frame(true) end
  if err == "X connection lost" then self:lost(err) end
  return drawn, err
end

-- Frames a viewer may have sent but not yet painted: fewer while someone
-- types, so that the browser is not always busy with the next frame when
-- an echo arrives.
function M:window()
  if self.input_at and ba.clock() - self.input_at < self.typing_ms then return self.typing_inflight end
  return self.inflight
end

-- The pusher makes a frame only when the viewer has painted all but
-- `window()` of those it was sent (ACK messages) and something changed.
local function pusher_loop(self, ws, v, viewer)
  return function(me)
    while true do
      local msg, err
      if viewer.unacked < self:window() then msg, err = self:frame(v) end
      if err or self.dead then break end
      if msg then
        viewer.unacked = viewer.unacked + 1
        if not ws:write(msg) then break end
      else
        if viewer.unacked < self:window() then self.parked[me] = true end
        local go = me:disable()   -- until a change (tick) or an ACK (reader)
        self.parked[me] = nil
        if not go then break end
      end
    end
    ws:close()
  end
end

-- Without an echo lane (no second X connection) the viewer simply gets no
-- overlays: the frames bring every echo too.
local function echoer_loop(self, ws)
  return function()
    local msg, seq = nil, nil
    while true do
      msg, seq = self.scr:echo(seq)
      if not msg then
        if seq ~= "closed" and seq ~= "sysshutdown" then trace("screenshare: no echo lane: " .. tostring(seq)) end
        break
      end
      if not ws:write(msg) then break end
    end
  end
end

-- ACK: u8 6, 3 bytes 0, u32 sequence number of the frame painted.
local function is_ack(data)
  return #data == 8 and data:byte(1) == ACK and data:sub(2, 4) == "\0\0\0"
end

local function reader_loop(self, role, viewer)
  return function(ws)
    while true do
      local data, is_text = ws:read()
      if not data then break end
      if is_text then ws:close(1003, "binary messages only") break end
      if is_ack(data) then
        viewer.unacked = math.max(0, viewer.unacked - 1)
        if viewer.pusher then viewer.pusher:enable(true) end
      elseif role == "control" or data:byte(1) == PING then
        local ok, reply, code = self.scr:input(data)
        if ok == nil then
          trace("screenshare: viewer closed: " .. reply)
          ws:close(code, reply)
          break
        end
        local kind = data:byte(1)
        if kind == KEY or kind == BUTTON then self.input_at = ba.clock() end
        if reply and not ws:write(reply) then break end
      end
    end
    if viewer.pusher then viewer.pusher:close() end
    if viewer.echoer then viewer.echoer:close() end
    self:leave(viewer)
  end
end

-- A viewer is counted from its upgrade until it leaves, once, whichever
-- way it goes.
function M:leave(viewer)
  if viewer.gone then return end
  viewer.gone = true
  self.count = self.count - 1
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
  local viewer = {unacked = 0}
  -- The peer may be gone already: then no reader runs to count it out.
  if not ws:event(reader_loop(self, role, viewer), "s") then
    self:leave(viewer)
    ws:close()
    return true
  end
  if viewer.gone then return true end   -- the reader has ended already
  viewer.pusher = ba.socket.event(pusher_loop(self, ws, self.scr:viewer{quality = self.quality, timestamps = self.timestamps}, viewer))
  viewer.echoer = ba.socket.event(echoer_loop(self, ws))
  return true
end

return M
