// @ts-check
// A lossless subscription whose application falls behind loses nothing in the client: the
// connection is held (the socket paused, the broker serving the subscription from its log
// meanwhile), or, where the socket cannot pause, closed past `heldBytes` and resumed from
// the subscription's token once the application has made room.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket as WsWebSocket } from "ws";
import { connect } from "tern-client";
import { Ternd, sleep } from "./harness.js";

/** @type {Ternd | undefined} */
let ternd;
after(async () => {
  await ternd?.close();
});

/**
 * Publishes `n` numbered messages to `subject`, then reads them from `sub`: slowly for the
 * first 40 (the queue of 4 is full at once), then as fast as they come.
 * @param {import("tern-client").Client} pub
 * @param {import("tern-client").Subscription} sub
 * @param {string} subject
 * @param {number} n
 */
async function slowThenFast(pub, sub, subject, n) {
  for (let i = 0; i < n; i++) pub.publish(subject, String(i).padEnd(64));
  await pub.flush(10_000);
  /** @type {number[]} */
  const got = [];
  while (got.length < n) {
    const m = await sub.next(10_000);
    got.push(Number(new TextDecoder().decode(m.payload).trim()));
    if (got.length < 40) await sleep(5);
  }
  return got;
}

/**
 * Every event of `client` so far, by type.
 * @param {import("tern-client").Client} client
 */
function recordEvents(client) {
  /** @type {any[]} */
  const seen = [];
  void (async () => {
    for await (const e of client.events()) seen.push(e);
  })();
  return seen;
}

/**
 * A lossless subscription of `client`'s to `subject` gets every one of `n` messages a
 * publisher on the TCP port sends, once, in order, none dropped in the client (the first
 * 40 read slowly). Returns the publisher, the subscription and the client's events.
 * @param {import("tern-client").Client} client
 * @param {string} subject
 */
async function everyMessageOnce(client, subject, n = 3000) {
  const events = recordEvents(client);
  const sub = client.subscribe(subject, { lossless: true });
  await sub.ready;
  const pub = await connect({ servers: /** @type {Ternd} */ (ternd).tcpUrl });
  const got = await slowThenFast(pub, sub, subject, n);
  assert.deepEqual(
    got,
    Array.from({ length: n }, (_, i) => i),
  );
  assert.equal(sub.dropped, 0);
  return { pub, sub, events };
}

test("a full lossless subscription pauses the socket: every message once, in order", async () => {
  // The broker pings every 100 ms and gives up after two unanswered: the held client
  // must say it is alive on its own.
  ternd = await Ternd.start(["--ping-interval", "100ms", "--ping-max", "2"]);
  const sub_client = await connect({ servers: ternd.tcpUrl, subscriptionCapacity: 4 });
  const { pub, sub, events } = await everyMessageOnce(sub_client, "held.tcp");
  assert.deepEqual(
    events.filter((e) => e.type === "dropNotice" || e.type === "disconnected"),
    [],
  );
  // Held a second with the queue full, past the broker's patience for silence.
  for (let i = 0; i < 10; i++) pub.publish("held.tcp", "more");
  await pub.flush();
  await sleep(1000);
  for (let i = 0; i < 10; i++) assert.equal((await sub.next(5000)).string(), "more");
  assert.deepEqual(
    events.filter((e) => e.type === "disconnected"),
    [],
  );
  pub.close();
  sub_client.close();
  await ternd.close();
  ternd = undefined;
});

test("where the socket cannot pause, the client reconnects once there is room: nothing lost", async () => {
  ternd = await Ternd.start();
  // The `ws` package's WebSocket without `pause`: as a browser's.
  class Unpausable extends WsWebSocket {
    /** @param {ConstructorParameters<typeof WsWebSocket>} args */
    constructor(...args) {
      super(...args);
      Object.assign(this, { pause: undefined, resume: undefined });
    }
  }
  const sub_client = await connect({
    servers: ternd.wsUrl,
    WebSocket: /** @type {any} */ (Unpausable),
    subscriptionCapacity: 4,
    heldBytes: 64 << 10,
  });
  const { pub, events } = await everyMessageOnce(sub_client, "held.ws");
  assert.deepEqual(
    events.filter((e) => e.type === "dropNotice"),
    [],
  );
  const held = events.filter((e) => e.type === "disconnected");
  assert.ok(held.length >= 1, "the client closed the connection it could not pause");
  assert.ok(
    held.every((e) => e.reason === "held"),
    JSON.stringify(held.map((e) => e.reason)),
  );
  pub.close();
  sub_client.close();
});
