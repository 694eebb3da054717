"""Where a key's input-to-pixel time goes, from one traced window:

  SCREENSHARE_TIMESTAMPS=1 BENCH_TRACE=/tmp/t.json BENCH_SYSTEMS=remora BENCH_SCREEN=terminal \\
      python3 bench/screen/bench.py
  python3 bench/screen/trace.py /tmp/t.json

measure.mjs writes every update's server time (the TIME field: when its
rectangles were planned, after the grab), arrival and paint, and every key's
keydown time and latency (all epoch ms, one machine's clock). For each key the
update painted last before its echo was seen is taken as the one that carried
it, and the latency is cut into: keydown -> update planned (the key's trip to
X, the echo drawn, the wait for the grab), planned -> arrived (encode and
send), arrived -> painted (decode, and the updates before it), painted ->
seen (the page's 2-4 ms polling). Overlays (the echo lane's) are matched the
same way: keydown -> arrived, arrived -> painted, painted -> seen."""
import json
import statistics
import sys

d = json.load(open(sys.argv[1]))
frames = d["frames"]   # [server time, arrived, painted, bytes, rects]
overlays = d.get("overlays", [])   # [arrived, painted]


def matched(events, painted):
    """Each key with the last of events (painted at index painted) painted
    between its keydown and its echo being seen: the one that carried it."""
    for down, lat in d["keys"]:
        seen = down + lat
        hit = [e for e in events if down <= e[painted] <= seen + 0.5]
        if hit:
            yield down, lat, seen, hit[-1]


def medians(rows, n):
    return tuple(statistics.median(r[i] for r in rows) for i in range(n))


rows = [(lat, f[0] - down, f[1] - f[0], f[2] - f[1], seen - f[2]) for down, lat, seen, f in matched(frames, 2)]
if not rows:
    sys.exit("no key matched an update (was SCREENSHARE_TIMESTAMPS=1 set?)")
print("%d keys, medians (ms): latency %.1f = keydown->planned %.1f + planned->arrived %.1f + "
      "arrived->painted %.1f + painted->seen %.1f" % ((len(rows),) + medians(rows, 5)))
echoed = [(lat, o[0] - down, o[1] - o[0], seen - o[1]) for down, lat, seen, o in matched(overlays, 1)]
if echoed:
    print("%d keys with an overlay painted before their echo was seen, medians (ms): latency %.1f = keydown->arrived %.1f + "
          "arrived->painted %.1f + painted->seen %.1f" % ((len(echoed),) + medians(echoed, 4)))
gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:])]
print("%d updates, medians: %.1f ms apart, %.0f bytes" % (len(frames), statistics.median(gaps),
                                                          statistics.median(f[3] for f in frames)))
