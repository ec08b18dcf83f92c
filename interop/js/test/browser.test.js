// nats.ws in a real browser: headless Chromium loads a page served here, which connects
// over the browser's own WebSocket and subscribes, publishes and makes requests; Node-side
// clients of the same server answer, and the test checks what the page reports. Twice:
// ws:// with compression on (Chromium always offers permessage-deflate, so the page's
// traffic is compressed both ways; pubsub.test.js covers uncompressed frames), and wss://
// with a self-signed certificate, as a page served over https must connect.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { headers } from "nats.ws";
import { chromiumMissing, launchChromium, pageLog } from "./chromium.js";
import {
  Collector,
  PACKAGE_DIR,
  Server,
  makeCertificate,
  trustCertificate,
  within,
} from "./harness.js";
import { NATS_WS_BUNDLE, serveFiles } from "./static.js";

/** @typedef {import("./browser/page.js").PageResult} PageResult */

const skip = await chromiumMissing();
if (skip) {
  console.log(`browser test skipped: ${skip}`);
}

/** @type {Awaited<ReturnType<typeof serveFiles>>} */
let site;
/** Where the wss:// test keeps its certificate. */
/** @type {string} */
let dir;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tern-js-browser-"));
  site = await serveFiles({
    "/": join(PACKAGE_DIR, "test/browser/page.html"),
    "/page.js": join(PACKAGE_DIR, "test/browser/page.js"),
    "/nats.js": NATS_WS_BUNDLE,
  });
});

after(async () => {
  await site?.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Serves the page's counterpart from Node on `server`, runs the page in Chromium against
 * it, and returns what the page reported, after checking what every run must show.
 * @param {Server} server
 * @param {{ ignoreHTTPSErrors?: boolean }} [browserOptions]
 * @returns {Promise<PageResult>}
 */
async function runPage(server, browserOptions) {
  // The Node side: echoes what the page publishes, and answers its requests.
  const nc = await server.connect();
  const fromPage = new Collector(nc, "browser.from-page");
  nc.subscribe("browser.from-page", {
    callback: (_, msg) => nc.publish("browser.to-page", `node saw: ${msg.string()}`),
  });
  nc.subscribe("svc.upper", {
    callback: (_, msg) => {
      const h = headers();
      h.set("Seen-Header", msg.headers?.get("Asked-By") ?? "none");
      msg.respond(msg.string().toUpperCase(), { headers: h });
    },
  });
  await nc.flush();

  const browser = await launchChromium(browserOptions);
  try {
    const page = await browser.context.newPage();
    const log = pageLog(page);
    await page.goto(`${site.origin}/?server=${encodeURIComponent(server.url)}`);
    /** @type {PageResult} */
    let result;
    try {
      result = await within(
        page.evaluate(
          () =>
            /** @type {{ natsTest: Promise<PageResult> }} */ (/** @type {unknown} */ (globalThis))
              .natsTest,
        ),
        20_000,
        "the page's nats.ws run",
      );
    } catch (error) {
      throw new Error(`${error}\npage log:\n${log()}`, { cause: error });
    }
    assert.match(result.userAgent, /Chrome\//);
    assert.deepEqual(fromPage.texts(), ["hello from chromium"]);
    assert.equal(result.echoed, "node saw: hello from chromium");
    assert.equal(result.reply, "HELLO FROM CHROMIUM");
    assert.equal(result.replyHeader, "chromium");
    assert.equal(result.selfReply, "self: ping");
    assert.ok(result.roundTripMs > 0 && result.roundTripMs < 5_000);
    return result;
  } finally {
    await browser.close();
  }
}

test("a page in Chromium uses nats.ws over ws://, compressed", { skip }, async () => {
  const server = await Server.start({ compression: true });
  try {
    const result = await runPage(server);
    assert.match(result.extensions, /permessage-deflate/);
    console.log(`Chromium request round trip (ws://): ${result.roundTripMs.toFixed(2)} ms`);
  } finally {
    await server.close();
  }
});

test("a page in Chromium uses nats.ws over wss://", { skip }, async () => {
  const tls = await makeCertificate(dir);
  await trustCertificate(tls); // for the Node side
  const server = await Server.start({ tls });
  try {
    assert.match(server.url, /^wss:/);
    const result = await runPage(server, { ignoreHTTPSErrors: true });
    console.log(`Chromium request round trip (wss://): ${result.roundTripMs.toFixed(2)} ms`);
  } finally {
    await server.close();
  }
});
