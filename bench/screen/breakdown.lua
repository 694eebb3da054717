-- What the engine does with a workload, without a browser: grab and frame
-- every EVERY ms for SECONDS, like one viewer that is always ready, then the
-- averages per frame (rects and bytes by encoding) and the CPU time of grab
-- and frame. Run by bench.py with BENCH_BREAKDOWN=1, on its display:
--   remora bench/screen/breakdown.lua [SECONDS [EVERY]]
local screen = require "screen"
local seconds, every = tonumber(arg[1] or 5), tonumber(arg[2] or 40)
local scr = assert(screen.open())
local v = scr:viewer{quality = tonumber(os.getenv("SCREENSHARE_QUALITY") or 85)}
local names = {[0] = "SOLID", "PNG", "JPEG", "COPY"}
local frames, bytes, grab_ms, frame_ms, ticks = 0, 0, 0, 0, 0
local count, size = {}, {}

-- Rectangles and payload bytes per encoding of one update (docs/screen-protocol.md).
local function tally(m)
  local off = 25
  for _ = 1, string.unpack("<I4", m, 13) do
    local enc, len = string.unpack("<BI4", m, off + 8)
    count[enc] = (count[enc] or 0) + 1
    size[enc] = (size[enc] or 0) + 13 + len
    off = off + 13 + len
  end
end

v:frame()   -- the first, full update is not part of the figures
local t0 = ba.clock()
local timer
timer = ba.timer(function()
  local a = os.clock()
  scr:poll()
  local b = os.clock()
  local m = v:frame()
  local c = os.clock()
  ticks, grab_ms = ticks + 1, grab_ms + (b - a) * 1000
  if m then
    frames, bytes, frame_ms = frames + 1, bytes + #m, frame_ms + (c - b) * 1000
    tally(m)
  end
  if ba.clock() - t0 < seconds * 1000 then return true end
  local n = math.max(frames, 1)
  print(string.format("%d updates in %d s, %.0f B each; CPU: grab %.2f ms per tick (%d ticks), frame %.2f ms per update",
                      frames, seconds, bytes / n, grab_ms / ticks, ticks, frame_ms / n))
  for e = 0, 3 do
    if count[e] then
      print(string.format("  %-5s %5.1f rects, %7.0f B per update", names[e], count[e] / n, size[e] / n))
    end
  end
  timer:cancel()
  return false
end)
timer:set(every)
