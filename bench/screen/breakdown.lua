-- What the engine does with a workload, without a browser: grab and frame
-- every EVERY ms for SECONDS, like one viewer that is always ready, then the
-- averages per frame (rects and bytes by encoding) and the CPU time of grab
-- and frame. Run by bench.py with BENCH_BREAKDOWN=1, on its display:
--   remora bench/screen/breakdown.lua [SECONDS [EVERY]]
local screen = require "screen"
local seconds, every = tonumber(arg[1] or 5), tonumber(arg[2] or 40)
local scr = assert(screen.open())
local v = scr:viewer{quality = tonumber(os.getenv("SCREENSHARE_QUALITY") or 85)}
local names = {[0] = "SOLID", "PNG", "JPEG", "COPY", "INDEXED", "INDEXED_Z"}
local frames, bytes, grab_ms, frame_ms, ticks = 0, 0, 0, 0, 0
local count, size = {}, {}

local function varint(m, off)
  local v, shift, b = 0, 0, 0x80
  while b >= 0x80 do
    b = m:byte(off)
    v, shift, off = v | (b & 0x7f) << shift, shift + 7, off + 1
  end
  return v, off
end

-- Rectangles and bytes per encoding of one update (docs/screen-protocol.md).
local function tally(m)
  local flags, off = m:byte(2), 3
  if flags & 1 ~= 0 then off = off + 4 end
  if flags & 2 ~= 0 then off = off + 8 end
  local npal = 0   -- colours of the last INDEXED palette
  while off <= #m do
    local start, enc, w, h, len = off, m:byte(off)
    off = off + 1
    _, off = varint(m, off)
    _, off = varint(m, off)
    w, off = varint(m, off)
    h, off = varint(m, off)
    if enc == 1 or enc == 2 or enc == 5 then len, off = varint(m, off) end
    if enc == 0 then off = off + 3
    elseif enc == 3 then _, off = varint(m, off); _, off = varint(m, off)
    elseif enc == 4 then
      npal = m:byte(off) > 0 and m:byte(off) or npal
      local depth = npal <= 2 and 1 or npal <= 4 and 2 or npal <= 16 and 4 or 8
      off = off + 1 + 3 * m:byte(off) + (w * h * depth + 7) // 8
    else
      if enc == 5 and m:byte(off) > 0 then npal = m:byte(off) end
      off = off + len
    end
    count[enc] = (count[enc] or 0) + 1
    size[enc] = (size[enc] or 0) + off - start
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
  for e = 0, 5 do
    if count[e] then
      print(string.format("  %-5s %5.1f rects, %7.0f B per update", names[e], count[e] / n, size[e] / n))
    end
  end
  timer:cancel()
  return false
end)
timer:set(every)
