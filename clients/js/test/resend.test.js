// @ts-check
// Acknowledged publishes with a message id across a lost connection, against ternd: the
// broker gets them, its acks never reach the client, the connection drops. Each is sent
// again on the next connection (after the resubscriptions, in order) and its caller gets
// an ack saying `duplicate` with the first copy's place; nothing is delivered twice; a
// publish without a message id rejects with Disconnected. What does not fit the offline
// buffer rejects with Disconnected too, and so does everything when there is no next
// connection (`reconnect: false`).

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { TernError, connect } from "tern-client";
import { Ternd, collect, recordEvents, sleep } from "./harness.js";
import { Blackhole } from "./proxy.js";

/** @type {Ternd[]} */
const started = [];
after(async () => {
  await Promise.all(started.map((t) => t.close()));
});

/** @param {unknown} e */
const disconnected = (e) => e instanceof TernError && e.kind === "Disconnected";

test("acked publishes with a message id are sent again after a lost connection", async () => {
  const ternd = await Ternd.start();
  started.push(ternd);
  const proxy = await Blackhole.start(ternd.binaryPort);
  const watcher = await connect({ servers: ternd.tcpUrl });
  const pub = await connect({
    servers: `tern://127.0.0.1:${proxy.port}`,
    reconnect: { baseMs: 10, capMs: 50 },
  });
  try {
    const events = recordEvents(pub);
    // The publisher's own subscription is re-sent first on the next connection.
    const own = pub.subscribe("once.>");
    await own.ready;
    const ownGot = collect(own);
    const got = collect(watcher.subscribe("once.>"));
    await watcher.flush();

    proxy.muteReplies(); // the broker's acks will not reach the publisher
    const identified = [0, 1, 2].map((i) =>
      pub.publishAcked(`once.${i}`, String(i), { messageId: `order-${i}` }),
    );
    const anonymous = pub.publishAcked("once.anon", "no id");
    const anonymousResult = anonymous.then(
      (ack) => ack,
      (e) => e,
    );
    // The broker got all four: they are delivered, each once.
    const first = await got.first(4, 10_000);
    assert.deepEqual(
      first.map((m) => m.subject),
      ["once.0", "once.1", "once.2", "once.anon"],
    );

    proxy.restore(); // the connection drops before any ack got through
    // Without a message id the outcome is unknown, and the caller is told so.
    assert.ok(disconnected(await anonymousResult), String(await anonymousResult));
    // With one, the publish is sent again on the next connection, and the broker
    // acknowledges the repeat with the first copy's place.
    const acks = await Promise.all(identified);
    assert.deepEqual(
      acks.map((a) => [a.duplicate, a.shard, a.sequence]),
      first.slice(0, 3).map((m) => [true, m.shard, m.sequence]),
    );
    await events.seen("resumed");
    // Nothing was delivered twice, to the watcher or to the publisher's own subscription.
    await pub.flush();
    await watcher.flush();
    await sleep(300);
    assert.equal(got.msgs.length, 4);
    assert.equal(ownGot.msgs.length, 4);
    assert.equal(pub.offlineBytes, 0);
    // And the publisher goes on as before.
    const next = await pub.publishAcked("once.3", "3", { messageId: "order-3" });
    assert.equal(next.duplicate, false);
    assert.equal((await got.first(5))[4]?.subject, "once.3");
  } finally {
    pub.close();
    watcher.close();
    await proxy.close();
  }
});

test("re-sent publishes that do not fit the offline buffer reject with Disconnected", async () => {
  const ternd = await Ternd.start();
  started.push(ternd);
  const proxy = await Blackhole.start(ternd.binaryPort);
  const watcher = await connect({ servers: ternd.tcpUrl });
  // Each publish below is a little over 1000 bytes on the wire: two fit in 2500.
  const pub = await connect({
    servers: `tern://127.0.0.1:${proxy.port}`,
    offlineBufferBytes: 2500,
    reconnect: { baseMs: 10, capMs: 50 },
  });
  try {
    const got = collect(watcher.subscribe("fit.>"));
    await watcher.flush();
    proxy.muteReplies();
    const payload = new Uint8Array(1000);
    const results = [1, 2, 3].map((i) =>
      pub.publishAcked(`fit.${i}`, payload, { messageId: `fit-${i}` }).then(
        (ack) => ack,
        (e) => e,
      ),
    );
    const first = await got.first(3, 10_000);
    proxy.restore();
    const [one, two, three] = await Promise.all(results);
    // The oldest that fit went again and were acknowledged as duplicates; the last did not fit.
    for (const [ack, m] of [
      [one, first[0]],
      [two, first[1]],
    ]) {
      assert.ok(!(ack instanceof Error), String(ack));
      assert.deepEqual([ack.duplicate, ack.sequence], [true, m?.sequence]);
    }
    assert.ok(disconnected(three), String(three));
    await pub.flush();
    await watcher.flush();
    await sleep(200);
    assert.equal(got.msgs.length, 3);
  } finally {
    pub.close();
    watcher.close();
    await proxy.close();
  }
});

test("without reconnection an identified publish lost with its connection rejects with Disconnected", async () => {
  const ternd = await Ternd.start();
  started.push(ternd);
  const proxy = await Blackhole.start(ternd.binaryPort);
  const pub = await connect({ servers: `tern://127.0.0.1:${proxy.port}`, reconnect: false });
  try {
    const watcher = await connect({ servers: ternd.tcpUrl });
    const got = collect(watcher.subscribe("alone.>"));
    await watcher.flush();
    proxy.muteReplies();
    const result = pub.publishAcked("alone.x", "x", { messageId: "alone-1" }).then(
      (ack) => ack,
      (e) => e,
    );
    await got.first(1, 10_000);
    proxy.restore();
    // No next connection to send it on: the outcome is unknown, as without a message id.
    const outcome = await result;
    assert.ok(disconnected(outcome), String(outcome));
    watcher.close();
  } finally {
    pub.close();
    await proxy.close();
  }
});
