// @ts-check
// The chat example (examples/chat) in headless Chromium against a real ternd:
//
// - two tabs side by side, Alice's straight to ternd, Bob's through a proxy whose network
//   the test takes away for 30 s (bytes vanish, nothing is closed, as when Wi-Fi dies)
//   while Alice keeps posting and Bob types into the dead connection and then offline.
//   Once the network is back, Bob's tab must show every message it missed, in order,
//   exactly once, marked as missed, and both tabs the same conversation;
// - a broker restart: a Node client's message sent while ternd was down, and the ones
//   after, appear once, in order, after what the tab showed before.
//
// Skips, saying why, when there is no Chromium.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect } from "tern-client";
import { chromiumMissing, launchChromium } from "./chromium.js";
import { PACKAGE_DIR, Ternd, sleep } from "./harness.js";
import { Blackhole } from "./proxy.js";
import { serveDir } from "./static.js";

const skip = await chromiumMissing();
if (skip) console.log(`chat test skipped: ${skip}`);

/** How long Bob's tab has no network. */
const OUTAGE_MS = 30_000;
/** Alice posts this often while Bob is away. */
const POST_EVERY_MS = 2_500;
/** The deadline of every wait for the page (a slow, busy CI machine included). */
const WAIT_MS = 30_000;

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

/**
 * The chat page's address.
 * @param {string} room
 * @param {string} name
 * @param {string} server
 */
function chatUrl(room, name, server) {
  return `${site.origin}/examples/chat/index.html?room=${room}&name=${name}&server=${encodeURIComponent(server)}`;
}

/** @typedef {import("playwright-core").FrameLocator | import("playwright-core").Page} Tab */

/**
 * "from: text" of every message line in a tab (or those `which` selects), top to bottom.
 * @param {Tab} tab
 * @param {string} [which]
 * @returns {Promise<string[]>}
 */
function lines(tab, which = "li.msg") {
  return tab
    .locator(`#messages ${which}`)
    .evaluateAll((items) =>
      items.map(
        (li) =>
          `${li.querySelector(".from")?.textContent}: ${li.querySelector(".text")?.textContent}`,
      ),
    );
}

/**
 * Waits until a tab shows at least these lines, failing with what it shows.
 * @param {Tab} tab
 * @param {string[]} wanted
 * @param {() => string} log
 */
async function shows(tab, wanted, log) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const have = await lines(tab);
    if (wanted.every((w) => have.includes(w))) return have;
    if (Date.now() > deadline) {
      assert.fail(
        `waited for ${JSON.stringify(wanted.filter((w) => !have.includes(w)))}; the tab shows ${JSON.stringify(have)}\n${log()}`,
      );
    }
    await sleep(100);
  }
}

/**
 * @param {Tab} tab
 * @param {"online" | "offline"} state
 */
function status(tab, state) {
  return tab.locator(`#status[data-state="${state}"]`).waitFor({ timeout: WAIT_MS });
}

/**
 * @param {Tab} tab
 * @param {string} text
 */
async function say(tab, text) {
  await tab.locator("#text").fill(text);
  await tab.locator("#submit").click();
}

test(
  "a tab offline for 30 s shows, on return, every message it missed, in order, exactly once",
  { skip, timeout: 110_000 },
  async () => {
    const proxy = await Blackhole.start(ternd.wsPort);
    const browser = await launchChromium();
    try {
      const page = await browser.context.newPage();
      /** @type {string[]} */
      const log = [];
      page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
      const pageLog = () => log.join("\n");
      await page.setContent(`<!doctype html>
        <style>body{margin:0;display:flex;gap:8px;height:100vh}iframe{flex:1;border:0}</style>
        <iframe name="alice" src="${chatUrl("outage", "alice", ternd.wsUrl)}"></iframe>
        <iframe name="bob" src="${chatUrl("outage", "bob", proxy.wsUrl)}"></iframe>`);
      const alice = page.frameLocator('iframe[name="alice"]');
      const bob = page.frameLocator('iframe[name="bob"]');

      await Promise.all([status(alice, "online"), status(bob, "online")]);
      await say(alice, "hi bob");
      await shows(bob, ["alice: hi bob"], pageLog);
      await say(bob, "hi alice");
      await shows(alice, ["bob: hi alice"], pageLog);
      await alice
        .locator("#members", { hasText: "2 here" })
        .waitFor({ timeout: WAIT_MS })
        .catch(() => assert.fail(`Alice's tab never showed both members\n${pageLog()}`));

      // Bob's network goes. He types at once, into a connection that is dead but not
      // known to be yet; Alice keeps posting for the whole outage.
      proxy.cut();
      const cutAt = Date.now();
      await say(bob, "typed into the dead connection");
      /** @type {string[]} */
      const missed = [];
      let bobNoticed = false;
      let bobTypedOffline = false;
      for (let n = 1; Date.now() - cutAt < OUTAGE_MS; n++) {
        const text = `alice ${n}, while bob is away`;
        await say(alice, text);
        missed.push(`alice: ${text}`);
        // The heartbeat tells Bob's tab within seconds; then he types once more.
        bobNoticed ||= (await bob.locator("#status").getAttribute("data-state")) === "offline";
        if (bobNoticed && !bobTypedOffline) {
          await say(bob, "typed while offline");
          bobTypedOffline = true;
        }
        await sleep(Math.min(POST_EVERY_MS, Math.max(0, OUTAGE_MS - (Date.now() - cutAt))));
      }
      assert.ok(bobNoticed, `Bob's tab never said it was offline\n${pageLog()}`);
      assert.ok(missed.length >= 8, `Alice posted ${missed.length} messages during the outage`);
      assert.deepEqual(
        (await lines(bob)).filter((l) => missed.includes(l)),
        [],
        "nothing crossed the dead network",
      );

      proxy.restore();
      await status(bob, "online");
      await say(alice, "welcome back");
      const bobs = ["bob: typed into the dead connection", "bob: typed while offline"];
      const everything = [
        "alice: hi bob",
        "bob: hi alice",
        ...missed,
        "alice: welcome back",
        ...bobs,
      ];
      await shows(bob, everything, pageLog);
      await shows(alice, everything, pageLog);
      // Anything arriving twice would come right behind: give it a moment.
      await sleep(1_000);
      await bob.locator("li.pending").first().waitFor({ state: "detached", timeout: WAIT_MS });

      const seenByBob = await lines(bob);
      assert.deepEqual(seenByBob, await lines(alice), "both tabs show the same conversation");
      assert.equal(new Set(seenByBob).size, seenByBob.length, `a duplicate: ${seenByBob}`);
      assert.equal(seenByBob.length, everything.length, `${seenByBob}`);
      // Alice's messages in the order she sent them; Bob's where the broker stored them.
      assert.deepEqual(
        seenByBob.filter((l) => !bobs.includes(l)),
        ["alice: hi bob", "bob: hi alice", ...missed, "alice: welcome back"],
      );
      // What Bob missed is marked as missed (not what he sent himself), and counted in
      // the outage's notice.
      const marked = await lines(bob, "li.msg.missed");
      for (const m of missed) assert.ok(marked.includes(m), `${m} not marked as missed`);
      for (const m of bobs) assert.ok(!marked.includes(m), `${m} marked as missed`);
      await bob
        .locator("#messages li.notice", { hasText: /\d+ missed messages caught up/ })
        .waitFor({ timeout: WAIT_MS });
    } finally {
      await browser.close();
      await proxy.close();
    }
  },
);

test(
  "the chat example shows every message once, in order, across a broker restart",
  { skip },
  async () => {
    const node = await connect({
      servers: ternd.tcpUrl,
      name: "node",
      reconnect: { baseMs: 10, capMs: 50 },
    });
    let n = 0;
    /** @param {string} text */
    const say = (text) =>
      JSON.stringify({ id: `node-${++n}`, from: "node", text, sentAt: Date.now() });
    await node.publishAcked("chat.restart", say("before 1"));
    await node.publishAcked("chat.restart", say("before 2"));
    const browser = await launchChromium();
    try {
      const page = await browser.context.newPage();
      /** @type {string[]} */
      const log = [];
      page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
      const pageLog = () => log.join("\n");
      await page.goto(chatUrl("restart", "ann", ternd.wsUrl));
      await shows(page, ["node: before 1", "node: before 2"], pageLog);
      await page.locator("#text").fill("hello from ann");
      await page.locator("#submit").click();
      await shows(page, ["ann: hello from ann"], pageLog);
      await ternd.stop();
      node.publish("chat.restart", say("while down")); // the Node client's offline buffer
      await ternd.run();
      await node.flush(5000);
      await node.publishAcked("chat.restart", say("after"));
      await shows(page, ["node: while down", "node: after"], pageLog);
      await sleep(300);
      assert.deepEqual(await lines(page), [
        "node: before 1",
        "node: before 2",
        "ann: hello from ann",
        "node: while down",
        "node: after",
      ]);
    } finally {
      await browser.close();
      node.close();
    }
  },
);
