// viewer.js: the browser side of remora's screen share (no framework).
//
// The page supplies the WebSocket URL, a <canvas> and, optionally, a status
// element:
//
//   <canvas id="screen" tabindex="0"></canvas><div id="status"></div>
//   <script src="viewer.js"></script>
//   <script>RemoraScreen.start({url: "ws://" + location.host + "/screen/ws",
//     canvas: document.getElementById("screen"),
//     status: document.getElementById("status")});</script>
//
// Other options: viewOnly (send no input, only pings), onpaint(frame, ms)
// (called after each update is painted, with the parsed update and the
// time it took from arrival; tests and the benchmark use it), onoverlay(o)
// (called when an overlay is painted).
//
// The wire format is described in docs/screen-protocol.md. Updates are
// applied strictly in arrival order: each one decodes all its images in
// parallel, then paints COPY rectangles (from the canvas as it was), then
// the rest. Updates are numbered 1, 2, ... in arrival order; ACK names one.
//
// Overlays (a key's echo, sent while the next update is still being made)
// are painted as soon as they are decoded, outside that order, on a second
// canvas laid over the first: the first stays what the server thinks the
// viewer has (COPY reads it), and painting an overlay never waits for the
// first canvas's pending drawing. An update as new as an overlay takes it
// off.
(function () {
  "use strict";

  var MSG_FRAME = 1, MSG_PONG = 2, MSG_OVERLAY = 3;
  var IN_MOVE = 1, IN_BUTTON = 2, IN_KEY = 3, IN_CLIPBOARD = 4, IN_PING = 5, IN_ACK = 6;
  var SOLID = 0, PNG = 1, JPEG = 2, COPY = 3, INDEXED = 4, INDEXED_Z = 5;
  var FULL = 1, TIME = 2, SEQ = 4;
  var KEY_FIELD_MAX = 32;
  var WHEEL_STEP = 50; // pixels of wheel delta per notch

  function start(opts) {
    var canvas = opts.canvas, status = opts.status;
    var ctx = canvas.getContext("2d", {alpha: false});
    var top = document.createElement("canvas"); // the overlays, over canvas
    var topCtx = top.getContext("2d");
    top.style.position = "absolute";
    top.style.pointerEvents = "none"; // input goes to canvas
    canvas.parentNode.insertBefore(top, canvas.nextSibling);
    var ws = new WebSocket(opts.url);
    var chain = Promise.resolve();
    var encoder = new TextEncoder();
    var stats = {frames: 0, bytes: 0, rtt: NaN, since: performance.now()};
    var wheel = {x: 0, y: 0};
    var pendingPaste = null;
    var snapshot = null; // reused for updates with several COPY rectangles
    var lane = {palette: null}; // updates' last INDEXED palette, as RGBA words
    var seq = 0;         // updates received
    var overlays = [];   // laid over the canvas, oldest first
    var newest = 0;      // the highest framebuffer number an update was painted with
    ws.binaryType = "arraybuffer";

    // --- drawing ------------------------------------------------------------

    function fit() {
      var sw = window.innerWidth / canvas.width, sh = (window.innerHeight - 24) / canvas.height;
      var s = Math.min(sw, sh), r;
      top.style.width = canvas.style.width = Math.floor(canvas.width * s) + "px";
      top.style.height = canvas.style.height = Math.floor(canvas.height * s) + "px";
      r = canvas.getBoundingClientRect();
      top.style.left = r.left + window.scrollX + "px";
      top.style.top = r.top + window.scrollY + "px";
    }
    window.addEventListener("resize", fit);

    // A reader over one message: bytes, little-endian u16, LEB128 varints.
    function reader(buf) {
      var b = new Uint8Array(buf), off = 0;
      return {
        more: function () { return off < b.length; },
        u8: function () { return b[off++]; },
        u16: function () { off += 2; return b[off - 2] | b[off - 1] << 8; },
        f64: function () { off += 8; return new DataView(buf, off - 8, 8).getFloat64(0, true); },
        varint: function () {
          var v = 0, shift = 0, c;
          do { c = b[off++]; v += (c & 127) * Math.pow(2, shift); shift += 7; } while (c & 128);
          return v;
        },
        bytes: function (n) { off += n; return b.subarray(off - n, off); }
      };
    }

    // INDEXED: u8 colours (0: the palette sent last), RGB triples, then the
    // packed indices (raw, or deflated for INDEXED_Z): their length follows
    // from the rectangle and the palette.
    // Overlays always carry their palette and keep it to themselves.
    function indexedHead(r, rd, pal) {
      var n = rd.u8();
      if (n) {
        pal.palette = new Uint32Array(n);
        var p = rd.bytes(3 * n);
        for (var i = 0; i < n; i++) pal.palette[i] = 0xff000000 | p[3 * i + 2] << 16 | p[3 * i + 1] << 8 | p[3 * i];
      }
      r.palette = pal.palette;
      r.depth = r.palette.length <= 2 ? 1 : r.palette.length <= 4 ? 2 : r.palette.length <= 16 ? 4 : 8;
      return 1 + 3 * n;
    }

    function parseRects(rd, pal) {
      var rects = [];
      while (rd.more()) {
        var r = {enc: rd.u8(), x: rd.varint(), y: rd.varint(), w: rd.varint(), h: rd.varint()};
        if (r.enc === PNG || r.enc === JPEG) r.data = rd.bytes(rd.varint());
        else if (r.enc === SOLID) r.data = rd.bytes(3);
        else if (r.enc === COPY) { r.sx = rd.varint(); r.sy = rd.varint(); }
        else if (r.enc === INDEXED) { indexedHead(r, rd, pal); r.data = rd.bytes(Math.ceil(r.w * r.h * r.depth / 8)); }
        else if (r.enc === INDEXED_Z) { var len = rd.varint(); r.data = rd.bytes(len - indexedHead(r, rd, pal)); }
        else throw new Error("unknown encoding " + r.enc);
        rects.push(r);
      }
      return rects;
    }

    function parse(buf) {
      var rd = reader(buf), frame = {seq: ++seq, bytes: buf.byteLength};
      rd.u8();
      var flags = rd.u8();
      if (flags & FULL) { frame.w = rd.u16(); frame.h = rd.u16(); } // else the size stays
      if (flags & TIME) frame.time = rd.f64();
      if (flags & SEQ) frame.grab = rd.varint();
      frame.rects = parseRects(rd, lane);
      return frame;
    }

    function unpack(r, bits) {
      var img = new ImageData(r.w, r.h), px = new Uint32Array(img.data.buffer), d = r.depth;
      var mask = (1 << d) - 1, per = 8 / d;
      for (var i = 0; i < px.length; i++) {
        var shift = 8 - d * (i % per + 1);
        px[i] = r.palette[(bits[(i / per) | 0] >> shift) & mask] || 0xff000000;
      }
      return img;
    }

    function inflate(data) {
      var stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
      return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
    }

    function decode(r) {
      if (r.enc === INDEXED) return unpack(r, r.data);
      if (r.enc === INDEXED_Z) return inflate(r.data).then(function (bits) { return unpack(r, bits); });
      if (r.enc !== PNG && r.enc !== JPEG) return null;
      return createImageBitmap(new Blob([r.data], {type: r.enc === PNG ? "image/png" : "image/jpeg"}));
    }

    // All COPY rectangles read the canvas as it was before this update; with
    // more than one, they read from a snapshot so an earlier copy cannot feed
    // a later one.
    function copies(rects) {
      var list = rects.filter(function (r) { return r.enc === COPY; }), src = canvas;
      if (list.length > 1) {
        if (!snapshot) snapshot = document.createElement("canvas");
        if (snapshot.width !== canvas.width || snapshot.height !== canvas.height) {
          snapshot.width = canvas.width;
          snapshot.height = canvas.height;
        }
        snapshot.getContext("2d").drawImage(canvas, 0, 0);
        src = snapshot;
      }
      list.forEach(function (r) {
        ctx.drawImage(src, r.sx, r.sy, r.w, r.h, r.x, r.y, r.w, r.h);
      });
    }

    function paintRect(c, r, bitmap) {
      if (r.enc === SOLID) {
        c.fillStyle = "rgb(" + r.data[0] + "," + r.data[1] + "," + r.data[2] + ")";
        c.fillRect(r.x, r.y, r.w, r.h);
      } else if (bitmap instanceof ImageData) {
        c.putImageData(bitmap, r.x, r.y);
      } else if (bitmap) {
        c.drawImage(bitmap, r.x, r.y);
      }
    }

    function lay(ov) {
      ov.rects.forEach(function (r, i) { paintRect(topCtx, r, ov.bitmaps[i]); });
    }

    // After an update: the overlays it is as new as come off (their
    // rectangles cleared, the others laid again where they overlapped).
    function lift() {
      if (!overlays.length) return; // nearly every update: nothing to look at
      var keep = overlays.filter(function (ov) { return ov.grab > newest; });
      if (keep.length === overlays.length) return;
      overlays.forEach(function (ov) {
        if (ov.grab <= newest) ov.rects.forEach(function (r) { topCtx.clearRect(r.x, r.y, r.w, r.h); });
      });
      overlays = keep;
      overlays.forEach(lay);
    }

    function paint(frame, bitmaps) {
      var resized = frame.w && (canvas.width !== frame.w || canvas.height !== frame.h);
      if (resized) {
        top.width = canvas.width = frame.w; // a resize clears the overlays too
        top.height = canvas.height = frame.h;
        overlays = [];
        ctx.imageSmoothingEnabled = false;
        fit();
      }
      frame.w = canvas.width; // for onpaint: the size this update was painted at
      frame.h = canvas.height;
      copies(frame.rects);
      frame.rects.forEach(function (r, i) {
        paintRect(ctx, r, bitmaps[i]);
        if (bitmaps[i] && bitmaps[i].close) bitmaps[i].close();
      });
      // An update without its number is older than the overlays.
      if (frame.grab !== undefined) newest = Math.max(newest, frame.grab);
      lift();
      stats.frames++;
    }

    function onOverlay(buf) {
      var ov;
      try {
        var rd = reader(buf);
        rd.u8();
        ov = {grab: rd.varint(), bytes: buf.byteLength, arrived: performance.now()};
        ov.rects = parseRects(rd, {palette: null});
      } catch (e) {
        setStatus("bad overlay: " + e);
        return;
      }
      Promise.all(ov.rects.map(decode)).then(function (bitmaps) {
        if (ov.grab <= newest || !canvas.width) return; // an update as new is painted already
        ov.bitmaps = bitmaps;
        lay(ov);
        overlays.push(ov);
        if (opts.onoverlay) opts.onoverlay(ov);
      }).catch(function (e) { setStatus("bad overlay: " + e); });
    }

    function onFrame(buf) {
      var frame = {seq: seq + 1, rects: []}, arrived = performance.now(), pending;
      try {
        frame = parse(buf);
        pending = Promise.all(frame.rects.map(decode)); // decoding starts now
      } catch (e) {
        seq = frame.seq;
        pending = Promise.reject(e);
      }
      chain = chain.then(function () { return pending; })
                   .then(function (bitmaps) {
                     paint(frame, bitmaps);
                     ack(frame.seq);
                     if (opts.onpaint) opts.onpaint(frame, performance.now() - arrived);
                   })
                   .catch(function (e) { setStatus("bad update: " + e); ack(frame.seq); });
    }

    ws.onmessage = function (ev) {
      if (!(ev.data instanceof ArrayBuffer)) return;
      var dv = new DataView(ev.data);
      stats.bytes += ev.data.byteLength;
      if (dv.getUint8(0) === MSG_FRAME) onFrame(ev.data);
      else if (dv.getUint8(0) === MSG_OVERLAY) onOverlay(ev.data);
      else if (dv.getUint8(0) === MSG_PONG) stats.rtt = performance.now() - dv.getFloat64(4, true);
    };

    // --- input --------------------------------------------------------------

    // A view-only viewer sends nothing but pings (the server ignores the rest anyway).
    function send(bytes, always) {
      if (ws.readyState === WebSocket.OPEN && (always || !opts.viewOnly)) ws.send(bytes);
    }

    function point(ev) {
      var r = canvas.getBoundingClientRect();
      var x = Math.floor((ev.clientX - r.left) * canvas.width / r.width);
      var y = Math.floor((ev.clientY - r.top) * canvas.height / r.height);
      return [Math.max(0, Math.min(canvas.width - 1, x)), Math.max(0, Math.min(canvas.height - 1, y))];
    }

    function move(ev) {
      var p = point(ev), b = new DataView(new ArrayBuffer(6));
      b.setUint8(0, IN_MOVE);
      b.setUint16(2, p[0], true);
      b.setUint16(4, p[1], true);
      send(b.buffer);
    }

    function button(ev, n, down) {
      var p = point(ev), b = new DataView(new ArrayBuffer(8));
      b.setUint8(0, IN_BUTTON);
      b.setUint8(1, n);
      b.setUint8(2, down ? 1 : 0);
      b.setUint16(4, p[0], true);
      b.setUint16(6, p[1], true);
      send(b.buffer);
    }

    // Browser buttons 0/1/2 are left/middle/right; X calls them 1/2/3.
    var BUTTON = {0: 1, 1: 2, 2: 3};
    canvas.addEventListener("pointermove", move);
    canvas.addEventListener("pointerdown", function (ev) {
      canvas.focus();
      if (BUTTON[ev.button]) button(ev, BUTTON[ev.button], true);
      ev.preventDefault();
    });
    canvas.addEventListener("pointerup", function (ev) {
      if (BUTTON[ev.button]) button(ev, BUTTON[ev.button], false);
      ev.preventDefault();
    });
    canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    canvas.addEventListener("wheel", function (ev) {
      var unit = ev.deltaMode === 0 ? 1 : WHEEL_STEP; // pixels, or lines/pages
      wheel.x += ev.deltaX * unit;
      wheel.y += ev.deltaY * unit;
      for (; Math.abs(wheel.y) >= WHEEL_STEP; wheel.y -= Math.sign(wheel.y) * WHEEL_STEP) {
        var n = wheel.y < 0 ? 4 : 5; // X: 4 up, 5 down
        button(ev, n, true);
        button(ev, n, false);
      }
      for (; Math.abs(wheel.x) >= WHEEL_STEP; wheel.x -= Math.sign(wheel.x) * WHEEL_STEP) {
        var m = wheel.x < 0 ? 6 : 7; // X: 6 left, 7 right
        button(ev, m, true);
        button(ev, m, false);
      }
      ev.preventDefault();
    }, {passive: false});

    function field(s) {
      var b = encoder.encode(s);
      return b.length <= KEY_FIELD_MAX ? b : encoder.encode("Unidentified");
    }

    function key(ev, down) {
      var code = /^[A-Za-z0-9]{1,32}$/.test(ev.code) ? ev.code : "Unidentified";
      var c = encoder.encode(code), k = field(ev.key || "");
      var b = new Uint8Array(4 + c.length + k.length);
      b[0] = IN_KEY;
      b[1] = down ? 1 : 0;
      b[2] = c.length;
      b[3] = k.length;
      b.set(c, 4);
      b.set(k, 4 + c.length);
      send(b.buffer);
    }

    function clipboard(text) {
      var t = encoder.encode(text), b = new Uint8Array(8 + t.length);
      new DataView(b.buffer).setUint32(4, t.length, true);
      b[0] = IN_CLIPBOARD;
      b.set(t, 8);
      send(b.buffer);
    }

    // Ctrl+V (Cmd+V) first hands the local clipboard over, then the keys, so
    // the remote application pastes what the user just copied here.
    function isPaste(ev) {
      return (ev.ctrlKey || ev.metaKey) && ev.code === "KeyV";
    }

    canvas.addEventListener("keydown", function (ev) {
      if (isPaste(ev)) {
        pendingPaste = ev;
        setTimeout(function () { if (pendingPaste === ev) { pendingPaste = null; key(ev, true); } }, 100);
        return; // let the browser fire "paste"
      }
      key(ev, true);
      ev.preventDefault();
    });
    canvas.addEventListener("keyup", function (ev) {
      key(ev, false);
      ev.preventDefault();
    });
    window.addEventListener("paste", function (ev) {
      var text = ev.clipboardData && ev.clipboardData.getData("text/plain");
      if (text) clipboard(text);
      if (pendingPaste) {
        key(pendingPaste, true);
        pendingPaste = null;
      }
      ev.preventDefault();
    });

    // --- status -------------------------------------------------------------

    function setStatus(text) {
      if (status) status.textContent = text;
    }

    // The server sends the next update only when all but a couple were
    // painted: the queue stays on the server, where it collapses into one
    // fresher update, not in the browser.
    function ack(seq) {
      var b = new DataView(new ArrayBuffer(8));
      b.setUint8(0, IN_ACK);
      b.setUint32(4, seq, true);
      send(b.buffer, true);
    }

    function ping() {
      var b = new DataView(new ArrayBuffer(12));
      b.setUint8(0, IN_PING);
      b.setFloat64(4, performance.now(), true);
      send(b.buffer, true);
    }

    var timer = setInterval(function () {
      var now = performance.now(), secs = (now - stats.since) / 1000;
      setStatus((opts.viewOnly ? "view only  " : "") + canvas.width + "x" + canvas.height + "  " +
                (stats.frames / secs).toFixed(1) + " fps  " +
                (stats.bytes / secs / 1024).toFixed(1) + " KiB/s  rtt " +
                (isNaN(stats.rtt) ? "-" : stats.rtt.toFixed(1) + " ms"));
      stats.frames = 0;
      stats.bytes = 0;
      stats.since = now;
      ping();
    }, 1000);

    ws.onopen = function () { setStatus("connected"); ping(); canvas.focus(); };
    ws.onclose = function (ev) {
      clearInterval(timer);
      setStatus("disconnected (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")");
    };
    return ws;
  }

  window.RemoraScreen = {start: start};
})();
