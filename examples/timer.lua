-- A periodic timer doing work every 500 ms; it stops after `count` ticks
-- (default: forever) by returning false.
local count = tonumber(arg[1])
local ticks = 0
ba.timer(function()
  ticks = ticks + 1
  print(string.format("tick %d at %d ms", ticks, ba.clock()))
  return not count or ticks < count
end):set(500)
