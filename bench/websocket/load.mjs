// The load: CONNS WebSocket connections, each with one message of SIZE bytes
// in flight (send, wait for the echo, send again) for SECONDS. Prints one
// JSON line: messages echoed, per second, and latency percentiles in ms.
// usage: node load.mjs URL CONNS SIZE SECONDS
import WebSocket from "ws";

const [url, conns, size, seconds] = [process.argv[2], ...process.argv.slice(3).map(Number)];
const payload = Buffer.alloc(size, 97);
const lat = [];
let count = 0, errors = 0, measuring = false, open = 0;

function client() {
  return new Promise(resolve => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let sent = 0;
    const send = () => { sent = performance.now(); ws.send(payload, { binary: true }); };
    ws.on("open", () => { open++; resolve(ws); send(); });
    ws.on("message", data => {
      if (data.length !== size) errors++;
      if (measuring) { count++; lat.push(performance.now() - sent); }
      send();
    });
    ws.on("error", () => { errors++; resolve(null); });
  });
}

const sockets = await Promise.all(Array.from({ length: conns }, client));
await new Promise(r => setTimeout(r, 500));   // warm up
measuring = true;
const t0 = performance.now();
await new Promise(r => setTimeout(r, seconds * 1000));
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const pct = p => lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : null;
console.log(JSON.stringify({ messages: count, rate: count / elapsed, p50_ms: pct(0.5), p99_ms: pct(0.99),
                             errors, open }));
for (const ws of sockets) if (ws) ws.terminate();
process.exit(0);
