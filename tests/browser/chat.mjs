// Headless Chromium against examples/wschat: two pages join the chat, each
// sends a message, each sees the other's; the WebSocket must have
// negotiated permessage-deflate. Prints "ok NAME" / "FAIL NAME: why".
// usage: node chat.mjs http://127.0.0.1:PORT/
import { chromium } from "playwright-core";

const base = process.argv[2];
const results = [];
function check(name, cond, why) {
  results.push(cond ? "ok " + name : "FAIL " + name + ": " + why);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const ctx = await browser.newContext();
  const a = await ctx.newPage(), b = await ctx.newPage();
  for (const p of [a, b]) {
    await p.goto(base, { timeout: 10000 });
    await p.waitForFunction(() => window.chat && window.chat.open, null, { timeout: 10000 });
  }
  const ext = await a.evaluate(() => window.chat.ws.extensions);
  check("browser_negotiated_permessage_deflate", /permessage-deflate/.test(ext), "extensions: " + JSON.stringify(ext));
  const proto = await a.evaluate(() => window.chat.ws.protocol);
  check("browser_got_the_chat_subprotocol", proto === "chat", "protocol: " + JSON.stringify(proto));

  await a.fill("#text", "hello from A ✓");
  await a.press("#text", "Enter");
  await b.evaluate(() => window.chat.ws.send("hello from B"));
  const seen = (p, text) => p.waitForFunction(t => window.chat.messages.includes(t), text, { timeout: 10000 })
    .then(() => true, () => false);
  check("second_page_receives_first_pages_message", await seen(b, "hello from A ✓"),
        "B saw " + JSON.stringify(await b.evaluate(() => window.chat.messages)));
  check("first_page_receives_second_pages_message", await seen(a, "hello from B"),
        "A saw " + JSON.stringify(await a.evaluate(() => window.chat.messages)));
  const shown = await b.locator("#log").innerText();
  check("message_shown_as_text_in_the_log", shown.includes("hello from A ✓"), "log: " + JSON.stringify(shown));
} catch (e) {
  results.push("FAIL browser_chat: " + e.message.split("\n")[0]);
} finally {
  await browser.close();
}
console.log(results.join("\n"));
process.exit(results.some(r => r.startsWith("FAIL")) ? 1 : 0);
