// One measurement window in headless Chromium, for remora's page or noVNC.
// usage: node measure.mjs CONFIG.json   (written by bench.py); prints one JSON line.
//
// Config: {kind: "remora"|"novnc", url, seconds, echo: {x, y, w, h}, keys_every_ms,
//          server_pids: [...], pause_pid, dump_dir}
// Frames painted: remora's onpaint hook; noVNC's Display.flip (called once per
// framebuffer update). Bytes: every WebSocket frame the page received.
// Input-to-pixel: from the keydown event in the page until the echo area of the
// canvas changes (checked every 2-4 ms). CPU: /proc ticks of the server pids and
// of this process's descendants (Chromium), over the window.
import { readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

// playwright-core lives in tests/browser (the working directory bench.py gives).
const { chromium } = createRequire(process.cwd() + "/")("playwright-core");

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TICK = 100;
const sleep = ms => new Promise(r => setTimeout(r, ms));

function ticks(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch { return 0; }
}
function descendants(root) {
  const kids = new Map();
  for (const d of execFileSync("ls", ["/proc"]).toString().split("\n")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${d}/stat`, "utf8").split(") ")[1].split(" ")[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch { /* gone */ }
  }
  const out = [], todo = [root];
  while (todo.length) { const p = todo.pop(); for (const k of kids.get(p) || []) { out.push(k); todo.push(k); } }
  return out;
}
const cpu = pids => pids.reduce((s, p) => s + ticks(p), 0);

// In the page: counts painted frames and measures key-to-pixel latency.
function probe(kind) {
  const t = window.__bench = { frames: 0, lat: [], pending: null, trace: kind === "remora" ? [] : null, keys: [],
                               overlays: [] };
  if (kind === "remora") {
    let real;
    Object.defineProperty(window, "RemoraScreen", {
      configurable: true, get() { return real; },
      set(v) { real = { start: o => v.start(Object.assign(o, { onpaint: (f, ms) => {
      t.frames++;
      // BENCH_TRACE: when each update was made (server), arrived and was painted (epoch ms).
      if (t.trace) t.trace.push([f.time || 0, performance.timeOrigin + performance.now() - ms,
                                 performance.timeOrigin + performance.now(), f.bytes, f.rects.length]);
    }, onoverlay: o => {
      // BENCH_TRACE: when each overlay (a key's echo) arrived and was painted (epoch ms).
      if (t.trace) t.overlays.push([performance.timeOrigin + o.arrived, performance.timeOrigin + performance.now()]);
    } })) }; },
    });
  }
  t.canvas = () => document.querySelector("canvas");
  // What the page shows in a region: the canvases composed in document order
  // (remora paints overlays on a second canvas over the first).
  t.area = e => {
    const cs = document.querySelectorAll("canvas");
    const out = cs[0].getContext("2d").getImageData(e.x, e.y, e.w, e.h).data;
    for (let k = 1; k < cs.length; k++) {
      if (cs[k].width !== cs[0].width) continue;
      const over = cs[k].getContext("2d").getImageData(e.x, e.y, e.w, e.h).data;
      for (let i = 0; i < over.length; i += 4)
        if (over[i + 3]) { out[i] = over[i]; out[i + 1] = over[i + 1]; out[i + 2] = over[i + 2]; }
    }
    return out;
  };
  // arm() installs the keydown listener and returns at once; the key is typed
  // only after that (a listener installed late, by a renderer busy painting,
  // would miss its key); t.result resolves with the latency, or null.
  t.arm = e => {
    const before = t.area(e);
    t.result = new Promise(resolve => {
      const lost = setTimeout(() => resolve(null), 5000);   // the key never arrived
      window.addEventListener("keydown", ev => {
        clearTimeout(lost);
        const t0 = ev.timeStamp;
        const poll = () => {
          const now = t.area(e);
          for (let i = 0; i < now.length; i++)
            if (now[i] !== before[i]) {
              t.keys.push([performance.timeOrigin + t0, performance.now() - t0]);
              resolve(performance.now() - t0);
              return;
            }
          if (performance.now() - t0 > 5000) resolve(null); else setTimeout(poll, 2);
        };
        poll();
      }, { once: true, capture: true });
    });
  };
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const result = { kind: cfg.kind };
try {
  const page = await (await browser.newContext({ viewport: { width: 1920, height: 1130 } })).newPage();
  let bytes = 0, messages = 0;
  page.on("websocket", ws => ws.on("framereceived", f => { bytes += f.payload.length; messages++; }));
  await page.addInitScript(probe, cfg.kind);
  await page.goto(cfg.url, { timeout: 15000 });
  await page.waitForFunction(() => { const c = window.__bench.canvas(); return c && c.width >= 1920; }, null, { timeout: 15000 });
  if (cfg.kind === "novnc") await page.waitForFunction(() => window.__bench.frames > 0, null, { timeout: 15000 });
  await page.evaluate(() => window.__bench.canvas().focus());
  await sleep(1500);   // past the first full update

  const chrome = descendants(process.pid);
  const f0 = await page.evaluate(() => window.__bench.frames), b0 = bytes;
  const s0 = cpu(cfg.server_pids), c0 = cpu(chrome), t0 = Date.now();
  const lat = [];
  let n = 0;
  while (Date.now() - t0 < cfg.seconds * 1000) {
    await page.evaluate(e => window.__bench.arm(e), cfg.echo);
    await page.keyboard.press(++n % 25 ? "x" : "Enter");
    const v = await page.evaluate(() => window.__bench.result);
    if (v !== null && n % 25) lat.push(v);
    await sleep(cfg.keys_every_ms);
  }
  const secs = (Date.now() - t0) / 1000;
  const frames = await page.evaluate(() => window.__bench.frames) - f0;
  Object.assign(result, {
    seconds: secs, frames, fps: frames / secs, bytes: bytes - b0, bytes_per_s: (bytes - b0) / secs,
    bytes_per_frame: frames ? (bytes - b0) / frames : null,
    server_cpu: (cpu(cfg.server_pids) - s0) / TICK / secs, browser_cpu: (cpu(chrome) - c0) / TICK / secs,
    latency_ms: lat, lost_keys: (n - Math.floor(n / 25)) - lat.length,
  });
  if (process.env.BENCH_TRACE)
    writeFileSync(process.env.BENCH_TRACE, JSON.stringify(await page.evaluate(() => ({
      frames: window.__bench.trace, keys: window.__bench.keys,
      overlays: window.__bench.overlays }))));

  // Quality: stop the animation, let the viewer settle, then the canvas and the X screen.
  if (cfg.pause_pid) process.kill(cfg.pause_pid, "SIGSTOP");
  await sleep(2000);
  const rgba = await page.evaluate(() => {
    const c = window.__bench.canvas(), d = window.__bench.area({ x: 0, y: 0, w: c.width, h: c.height });
    let s = "";
    for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
    return { w: c.width, h: c.height, px: btoa(s) };
  });
  writeFileSync(cfg.dump_dir + "/canvas.rgba", Buffer.from(rgba.px, "base64"));
  writeFileSync(cfg.dump_dir + "/screen.xwd", execFileSync("xwd", ["-root", "-silent"], { maxBuffer: 64 << 20 }));
  if (cfg.pause_pid) process.kill(cfg.pause_pid, "SIGCONT");
  result.canvas = [rgba.w, rgba.h];
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
