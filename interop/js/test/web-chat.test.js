// The web chat example (examples/web-chat) in headless Chromium: two tabs side by side chat
// live; one tab's network drops (a proxy in front of the server is cut) while the other
// keeps talking; when it is back, it shows what it missed, caught up through ternd's
// `$TERN.REPLAY`; a tab opened later shows the history. Under nats-server (no catch-up) the
// live part runs and the tab says history is not available.
//
// TERN_JS_SCREENSHOT=path saves a picture of the two tabs (docs/web-chat.png is one).

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromiumMissing, launchChromium, pageLog } from "./chromium.js";
import { IS_TERND, PACKAGE_DIR, Server } from "./harness.js";
import { Proxy } from "./proxy.js";
import { NATS_WS_BUNDLE, serveFiles } from "./static.js";

const EXAMPLE = join(PACKAGE_DIR, "../../examples/web-chat");
const skip = await chromiumMissing();
if (skip) {
  console.log(`web chat test skipped: ${skip}`);
}

/** @type {Server} */
let server;
/** @type {Proxy} */
let proxy;
/** @type {Awaited<ReturnType<typeof serveFiles>>} */
let site;

before(async () => {
  if (skip) {
    return;
  }
  server = await Server.start();
  proxy = await Proxy.start(server.wsPort);
  // The test serves the example with this package's nats.ws, which the next test checks
  // is the version the example pins.
  site = await serveFiles({
    "/": join(EXAMPLE, "index.html"),
    "/chat.js": join(EXAMPLE, "chat.js"),
    "/nats.js": NATS_WS_BUNDLE,
  });
});

after(async () => {
  await site?.close();
  await proxy?.close();
  await server?.close();
});

test("the example pins the nats.ws version these tests run", async () => {
  /** @param {string} file */
  const pinned = async (file) => JSON.parse(await readFile(file, "utf8")).dependencies["nats.ws"];
  assert.equal(
    await pinned(join(EXAMPLE, "package.json")),
    await pinned(join(PACKAGE_DIR, "package.json")),
  );
});

test("two tabs chat; a tab that was offline catches up on what it missed", { skip }, async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1000, height: 560 });
    const log = pageLog(page);
    /** @param {string} name @param {string} ws */
    const chatUrl = (name, ws) =>
      `${site.origin}/?room=demo&name=${name}&server=${encodeURIComponent(ws)}`;
    // Alice connects straight to the server; Bob through the proxy, so his network can drop.
    await page.setContent(`<!doctype html>
      <style>body{margin:0;display:flex;gap:8px;background:#c9ced6;height:100vh}
      iframe{flex:1;border:0;background:#fff}</style>
      <iframe name="alice" src="${chatUrl("alice", server.url)}"></iframe>
      <iframe name="bob" src="${chatUrl("bob", proxy.url)}"></iframe>`);
    const alice = page.frameLocator('iframe[name="alice"]');
    const bob = page.frameLocator('iframe[name="bob"]');
    const wait = { timeout: 15_000 };

    /** @param {import("playwright-core").FrameLocator} tab @param {string} name */
    const state = (tab, name) => tab.locator(`#status[data-state="${name}"]`).waitFor(wait);
    /** @param {import("playwright-core").FrameLocator} tab @param {string} text */
    const say = async (tab, text) => {
      await tab.locator("#text").fill(text);
      await tab.locator("#submit").click();
    };
    /** @param {import("playwright-core").FrameLocator} tab @param {string} text */
    const sees = (tab, text) =>
      tab.locator("#messages li", { hasText: text }).first().waitFor(wait);
    /** @param {import("playwright-core").FrameLocator} tab */
    const lines = (tab) =>
      tab
        .locator("#messages li:not(.notice)")
        .evaluateAll((items) =>
          items.map(
            (li) =>
              `${li.querySelector(".from")?.textContent}: ${li.querySelector(".text")?.textContent}`,
          ),
        );

    try {
      await Promise.all([state(alice, "online"), state(bob, "online")]);
      await say(alice, "hi bob");
      await sees(bob, "hi bob");
      await say(bob, "hi alice, all well?");
      await sees(alice, "hi alice, all well?");

      // Bob's network drops; Alice goes on.
      proxy.cut();
      await state(bob, "offline");
      assert.equal(await bob.locator("#submit").isDisabled(), true, "no sending while offline");
      await say(alice, "bob, you there?");
      await say(alice, "the meeting moved to 3pm");
      await sees(alice, "the meeting moved to 3pm");

      proxy.restore();
      await state(bob, "online");
      if (IS_TERND) {
        await sees(bob, "reconnected: 2 missed messages caught up");
        await sees(bob, "the meeting moved to 3pm");
        assert.equal(await bob.locator("#messages li.missed").count(), 2);
        await say(bob, "caught up, thanks!");
        await sees(alice, "caught up, thanks!");
        const expected = [
          "alice: hi bob",
          "bob: hi alice, all well?",
          "alice: bob, you there?",
          "alice: the meeting moved to 3pm",
          "bob: caught up, thanks!",
        ];
        assert.deepEqual(await lines(bob), expected);
        assert.deepEqual(await lines(alice), expected);
      } else {
        await sees(bob, "not available on this server");
      }

      if (process.env.TERN_JS_SCREENSHOT) {
        await page.screenshot({ path: process.env.TERN_JS_SCREENSHOT });
      }

      if (IS_TERND) {
        // A tab opened now shows the room's history.
        const late = await browser.context.newPage();
        await late.goto(chatUrl("carol", server.url));
        await late.locator("#messages li", { hasText: "caught up, thanks!" }).waitFor(wait);
        assert.equal((await late.locator("#messages li:not(.notice)").count()) >= 5, true);
      }
    } catch (error) {
      throw new Error(`${error}\npage log:\n${log()}`, { cause: error });
    }
  } finally {
    await browser.close();
  }
});
