// Headless Chromium against examples/screenshare on a private Xvfb (started by
// tests/integration/test_screenshare_browser.py). Prints "ok NAME" / "FAIL NAME: why".
//
// usage: node screenshare.mjs BASE_URL CONTROL_TOKEN VIEW_TOKEN TYPED_FILE
//   DISPLAY names the shared display; TYPED_FILE is where the terminal on it
//   writes what it receives (with mouse reporting on, a click arrives as ESC [ M).
//
// Pixel tolerance: pixels last painted from lossless rectangles (SOLID, PNG,
// and COPY of lossless pixels) must equal the X screen exactly; pixels from
// JPEG rectangles may differ by at most 8/255 on average per channel.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";

const [base, control, view, typedFile] = process.argv.slice(2);
const JPEG_MEAN_MAX = 8;
const results = [];
function check(name, cond, why) {
  results.push(cond ? "ok " + name : "FAIL " + name + ": " + why);
}
const sleep = ms => new Promise(r => setTimeout(r, ms));

// The X screen as RGBA (xwd: ZPixmap, 32 bits per pixel, 0xRRGGBB masks).
function xScreen() {
  const b = execFileSync("xwd", ["-root", "-silent"], { maxBuffer: 64 << 20 });
  const hsize = b.readUInt32BE(0), w = b.readUInt32BE(16), h = b.readUInt32BE(20);
  const lsb = b.readUInt32BE(28) === 0, bpp = b.readUInt32BE(44), line = b.readUInt32BE(48);
  const ncolors = b.readUInt32BE(76);
  if (bpp !== 32) throw new Error("xwd: " + bpp + " bits per pixel");
  const off = hsize + ncolors * 12, px = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const v = lsb ? b.readUInt32LE(off + y * line + x * 4) : b.readUInt32BE(off + y * line + x * 4);
      const i = (y * w + x) * 4;
      px[i] = v >> 16 & 255; px[i + 1] = v >> 8 & 255; px[i + 2] = v & 255; px[i + 3] = 255;
    }
  return { w, h, px };
}

// Runs in the page before the viewer script: wraps RemoraScreen.start so
// every painted update also maintains a per-pixel mask of JPEG-painted pixels.
function instrument() {
  let real;
  Object.defineProperty(window, "RemoraScreen", {
    configurable: true,
    get() { return real; },
    set(v) { real = { start: opts => v.start(Object.assign(opts, { onpaint: record, onoverlay: () => t.overlays++ })) }; },
  });
  const t = window.__test = { frames: 0, overlays: 0, mask: null, w: 0, h: 0 };
  function record(frame) {
    if (frame.w !== t.w || frame.h !== t.h) { t.w = frame.w; t.h = frame.h; t.mask = new Uint8Array(frame.w * frame.h); }
    const old = t.mask.slice();
    for (const r of frame.rects) {
      let sx = 0, sy = 0;
      if (r.enc === 3) { sx = r.sx; sy = r.sy; }
      for (let y = 0; y < r.h; y++)
        for (let x = 0; x < r.w; x++)
          t.mask[(r.y + y) * t.w + r.x + x] = r.enc === 2 ? 1 : r.enc === 3 ? old[(sy + y) * t.w + sx + x] : 0;
    }
    t.frames++;
  }
}

async function canvasPixels(page) {
  const r = await page.evaluate(() => {
    const c = document.getElementById("screen");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let s = "";
    for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
    let m = "";
    for (let i = 0; i < window.__test.mask.length; i += 0x8000) m += String.fromCharCode.apply(null, window.__test.mask.subarray(i, i + 0x8000));
    return { w: c.width, h: c.height, px: btoa(s), mask: btoa(m) };
  });
  return { w: r.w, h: r.h, px: Buffer.from(r.px, "base64"), mask: Buffer.from(r.mask, "base64") };
}

// Compares canvas and screen; region optional {x, y, w, h}.
function compare(c, s, region) {
  const g = region || { x: 0, y: 0, w: s.w, h: s.h };
  let lossless = 0, wrong = 0, lossy = 0, err = 0, firstWrong = null;
  for (let y = g.y; y < g.y + g.h; y++)
    for (let x = g.x; x < g.x + g.w; x++) {
      const p = y * s.w + x, i = p * 4;
      const d = Math.abs(c.px[i] - s.px[i]) + Math.abs(c.px[i + 1] - s.px[i + 1]) + Math.abs(c.px[i + 2] - s.px[i + 2]);
      if (c.mask[p]) { lossy++; err += d / 3; }
      else { lossless++; if (d) { wrong++; if (!firstWrong) firstWrong = [x, y]; } }
    }
  return { lossless, wrong, lossy, mean: lossy ? err / lossy : 0, firstWrong };
}

// Waits until the canvas equals the screen (the screen may still be changing).
async function settle(page, region, tries = 20) {
  let last;
  for (let i = 0; i < tries; i++) {
    await sleep(250);
    const s = xScreen(), c = await canvasPixels(page);
    if (c.w !== s.w || c.h !== s.h) { last = { size: [c.w, c.h, s.w, s.h] }; continue; }
    last = compare(c, s, region);
    if (last.wrong === 0 && last.mean <= JPEG_MEAN_MAX) return last;
  }
  return last;
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 850 } });
  const page = await ctx.newPage();
  await ctx.addInitScript(instrument);
  await page.goto(base + "?token=" + control, { timeout: 10000 });
  await page.waitForFunction(() => window.__test && window.__test.frames > 0, null, { timeout: 10000 });

  // 1. The canvas shows the X screen: text (lossless) exactly, the photo (JPEG) closely.
  const m = await settle(page);
  check("canvas_matches_x_screen",
        m && m.wrong === 0 && m.lossy > 0 && m.mean <= JPEG_MEAN_MAX,
        "lossless pixels " + (m && m.lossless) + ", wrong " + (m && m.wrong) + " first at " +
        JSON.stringify(m && m.firstWrong) + "; JPEG pixels " + (m && m.lossy) + ", mean error " +
        (m && m.mean.toFixed(2)) + (m && m.size ? " size " + m.size : ""));
  console.error("full screen: " + JSON.stringify(m));

  // 2. A click and typed text reach the terminal, and show up in the canvas.
  const box = await page.locator("#screen").boundingBox();
  const scale = box.width / 1024;
  await page.mouse.click(box.x + 60 * scale, box.y + 40 * scale);
  await page.keyboard.type("Hello, remora 42!");
  await page.keyboard.press("Enter");
  let typed = "";
  for (let i = 0; i < 40 && !typed.includes("Hello, remora 42!"); i++) {
    await sleep(100);
    typed = existsSync(typedFile) ? readFileSync(typedFile, "latin1") : "";
  }
  check("click_reaches_x_application", typed.includes("\x1b[M"), "terminal received " + JSON.stringify(typed));
  check("typed_text_reaches_x_application", typed.includes("Hello, remora 42!\n"), "terminal received " + JSON.stringify(typed));
  const t = await settle(page, { x: 0, y: 0, w: 500, h: 120 });
  check("typed_text_visible_in_canvas", t && t.wrong === 0, "terminal area: " + JSON.stringify(t));

  // 3. Typed while a terminal scrolls beside it: the echoes come as overlays
  // (painted over the canvas, lifted before each update), and once all is
  // still the canvas is the screen again, exactly.
  const scroller = spawn("xterm", ["-geometry", "80x20+0+330", "-e", "sh", "-c",
                                   "while :; do head -c 2000 /dev/urandom | od -x; done"], { stdio: "ignore" });
  try {
    await sleep(1000);
    await page.mouse.click(box.x + 60 * scale, box.y + 40 * scale);
    for (const c of "overlays") { await page.keyboard.press(c); await sleep(120); }
    await page.keyboard.press("Enter");
  } finally {
    scroller.kill();
  }
  const overlays = await page.evaluate(() => window.__test.overlays);
  const o = await settle(page);
  // The overlays' canvas (over #screen) shows nothing the screen does not.
  const stale = await page.evaluate(() => {
    const [base, top] = document.querySelectorAll("canvas");
    const a = base.getContext("2d").getImageData(0, 0, base.width, base.height).data;
    const b = top.getContext("2d").getImageData(0, 0, top.width, top.height).data;
    let n = 0;
    for (let i = 0; i < b.length; i += 4)
      if (b[i + 3] && (b[i] !== a[i] || b[i + 1] !== a[i + 1] || b[i + 2] !== a[i + 2])) n++;
    return top.width === base.width ? n : -1;
  });
  check("echo_overlays_then_canvas_is_screen",
        overlays > 0 && o && o.wrong === 0 && o.mean <= JPEG_MEAN_MAX && stale === 0,
        overlays + " overlays; then " + JSON.stringify(o) + ", stale overlay pixels " + stale);
  console.error("overlays: " + overlays + ", then " + JSON.stringify(o));

  // 4. Status line: fps, bytes/s, rtt.
  await sleep(1200);
  const status = await page.locator("#status").innerText();
  check("status_line_shows_fps_bytes_rtt", /fps/.test(status) && /KiB\/s/.test(status) && /rtt \d/.test(status),
        "status: " + JSON.stringify(status));

  // 5. Without the token: no canvas, and a WebSocket opened by hand gets nowhere.
  const intruder = await ctx.newPage();
  await intruder.goto(base, { timeout: 10000 });
  const canvases = await intruder.locator("canvas").count();
  const outcome = await intruder.evaluate(() => new Promise(resolve => {
    const ws = new WebSocket(new URL("ws.lsp", location.href).href.replace(/^http/, "ws"));
    ws.binaryType = "arraybuffer";
    let got = 0;
    ws.onopen = () => ws.send(new Uint8Array([1, 0, 10, 0, 10, 0]));  // MOVE to 10,10
    ws.onmessage = () => got++;
    ws.onclose = ev => resolve({ opened: ws.readyState, got, code: ev.code });
    setTimeout(() => resolve({ timeout: true, got }), 5000);
  }));
  const pointer = execFileSync("xdotool", ["getmouselocation"]).toString();
  check("no_token_sees_nothing_and_sends_nothing",
        canvases === 0 && outcome.got === 0 && outcome.code === 1006 && !/x:10 y:10 /.test(pointer),
        "canvases " + canvases + ", " + JSON.stringify(outcome) + ", pointer " + pointer);

  // 6. The view-only role sees the screen but its input goes nowhere.
  const viewer = await ctx.newPage();
  await viewer.goto(base + "?token=" + view, { timeout: 10000 });
  await viewer.waitForFunction(() => window.__test && window.__test.frames > 0, null, { timeout: 10000 });
  const before = readFileSync(typedFile, "latin1");
  const vbox = await viewer.locator("#screen").boundingBox();
  await viewer.mouse.click(vbox.x + 30, vbox.y + 30);
  await viewer.keyboard.type("nope");
  await viewer.keyboard.press("Enter");
  await sleep(800);
  check("view_only_input_ignored", readFileSync(typedFile, "latin1") === before,
        "terminal received " + JSON.stringify(readFileSync(typedFile, "latin1").slice(before.length)));
} catch (e) {
  results.push("FAIL screenshare_browser: " + (e && e.stack || e));
} finally {
  await browser.close();
}
console.log(results.join("\n"));
process.exit(results.some(l => l.startsWith("FAIL")) ? 1 : 0);
