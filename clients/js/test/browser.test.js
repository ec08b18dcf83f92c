// @ts-check
// The built ESM package in a real browser: headless Chromium (Debian's, through
// playwright-core) loads a page that imports dist/index.js and talks to ternd over
// ws://.../tern; a Node client answers its request and publishes to it; and the dashboard
// example. (The chat example has its own file, chat.test.js.) Skips, saying why, when
// there is no Chromium.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect } from "tern-client";
import { chromiumMissing, launchChromium } from "./chromium.js";
import { PACKAGE_DIR, Ternd, within } from "./harness.js";
import { serveDir } from "./static.js";

const skip = await chromiumMissing();
if (skip) console.log(`browser test skipped: ${skip}`);

/** @type {Ternd} */
let ternd;
/** @type {Awaited<ReturnType<typeof serveDir>>} */
let site;
before(async () => {
  if (skip) return;
  ternd = await Ternd.start();
  site = await serveDir(PACKAGE_DIR);
});
after(async () => {
  await site?.close();
  await ternd?.close();
});

test(
  "the ESM build in headless Chromium: connect over ws://…/tern, subscribe, publish, receive",
  { skip },
  async () => {
    const node = await connect({ servers: ternd.tcpUrl, name: "node-side" });
    const svc = node.subscribe("svc.upper");
    const echo = node.subscribe("browser.acked");
    void (async () => {
      for await (const m of svc) m.respond(m.string().toUpperCase());
    })();
    void (async () => {
      for await (const _ of echo) node.publish("browser.from-node", "hello page");
    })();
    await Promise.all([svc.ready, echo.ready]);

    const browser = await launchChromium();
    try {
      const page = await browser.context.newPage();
      /** @type {string[]} */
      const log = [];
      page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
      await page.goto(
        `${site.origin}/test/browser/page.html?server=${encodeURIComponent(ternd.wsUrl)}`,
      );
      const handle = await within(
        page.waitForFunction(() => /** @type {any} */ (globalThis).result, undefined, {
          timeout: 20_000,
        }),
        25_000,
        "the page's result",
      );
      const result = await handle.jsonValue();
      assert.ok(result.ok, `${result.error}\n${log.join("\n")}`);
      const r = result.ok;
      assert.equal(r.info.shards, 2);
      assert.equal(r.info.server, ternd.wsUrl);
      assert.deepEqual(
        r.received.map((/** @type {{ subject: string, text: string }} */ m) => [m.subject, m.text]),
        [
          ["browser.plain", "from the page"],
          ["browser.acked", "\u0001\u0002\u0003"],
          ["browser.from-node", "hello page"],
        ],
      );
      assert.equal(r.received[0].header, "yes");
      assert.equal(r.received[0].priority, 3);
      assert.equal(r.reply, "SHOUT");
      assert.equal(r.received[1].sequence, r.ack.sequence);
    } finally {
      await browser.close();
      node.close();
    }
  },
);

test("the dashboard example keeps the last value per key", { skip }, async () => {
  const node = await connect({ servers: ternd.tcpUrl, name: "metrics" });
  for (let i = 0; i <= 20; i++) {
    node.publish("metrics.cpu", JSON.stringify({ value: i }), { coalescingKey: "cpu" });
  }
  await node.publishAcked("metrics.disk", JSON.stringify({ value: 7 }), { coalescingKey: "disk" });
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    /** @type {string[]} */
    const log = [];
    page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(
      `${site.origin}/examples/dashboard/index.html?server=${encodeURIComponent(ternd.wsUrl)}`,
    );
    const read = () =>
      page.evaluate(() => {
        /** @type {any} */
        const d = /** @type {any} */ (globalThis).dashboard;
        return d ? Object.fromEntries([...d.latest].map(([k, v]) => [k, v.value])) : {};
      });
    const deadline = Date.now() + 10_000;
    let seen = await read();
    while (seen.cpu !== 20 || seen.disk !== 7) {
      assert.ok(
        Date.now() < deadline,
        `dashboard shows ${JSON.stringify(seen)}\n${log.join("\n")}`,
      );
      await new Promise((ok) => setTimeout(ok, 50));
      seen = await read();
    }
    node.publish("metrics.cpu", JSON.stringify({ value: 99 }), { coalescingKey: "cpu" });
    await page.waitForFunction(
      () => /** @type {any} */ (globalThis).dashboard.latest.get("cpu")?.value === 99,
      undefined,
      { timeout: 5000 },
    );
    const rows = await page.locator("#rows tr").count();
    assert.equal(rows, 2);
  } finally {
    await browser.close();
    node.close();
  }
});
