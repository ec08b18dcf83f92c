// @ts-check
// Staying connected, against a real ternd that is restarted, stopped and put in lame duck
// mode: resume from the resume token across a broker restart (every message once, in
// order), the offline buffer flushed after the resubscription, its overflow, heartbeat
// timeouts (a stopped broker; a WebSocket whose network went silent, which must not wait
// for a closing handshake that never comes), GOAWAY, and the events each step reports.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { TernError, connect } from "tern-client";
import { Ternd, collect, recordEvents, sleep, until, within } from "./harness.js";
import { Blackhole } from "./proxy.js";

/** @type {Ternd[]} */
const started = [];
after(async () => {
  await Promise.all(started.map((t) => t.close()));
});

/** @param {string[]} [extra] */
async function start(extra) {
  const t = await Ternd.start(extra);
  started.push(t);
  return t;
}

for (const transport of ["tcp", "ws"]) {
  test(`a broker restart mid-stream over ${transport}: every message once, in order`, async () => {
    const ternd = await start();
    const url = () => (transport === "tcp" ? ternd.tcpUrl : ternd.wsUrl);
    // The subscriber comes back 1.5 s after the loss (no jitter), well after the publisher.
    const sub = await connect({
      servers: url(),
      WebSocket,
      reconnect: { baseMs: 1500, capMs: 1500, random: () => 0.999999 },
    });
    const pub = await connect({ servers: url(), WebSocket, reconnect: { baseMs: 10, capMs: 50 } });
    const events = recordEvents(sub);
    const subject = `restart.${transport}`;
    const s = sub.subscribe(subject);
    await s.ready;
    const got = collect(s);

    for (let i = 0; i < 30; i++) await pub.publishAcked(subject, `m${i}`);
    await got.first(30);
    await ternd.stop();
    await events.seen("disconnected");
    // Published by the subscribing client while it is offline: kept, then sent after the
    // resubscription, so the subscription sees them once.
    for (let k = 0; k < 5; k++) sub.publish(subject, `offline${k}`);
    assert.ok(sub.offlineBytes > 0);
    await ternd.run();
    // The publisher (fast backoff) is back first: these are caught up from the log.
    await pub.flush(5000);
    for (let i = 30; i < 60; i++) await pub.publishAcked(subject, `m${i}`);
    await events.seen("resumed", 1, 10_000);
    for (let i = 60; i < 70; i++) await pub.publishAcked(subject, `m${i}`);

    await got.first(75, 10_000);
    await sub.flush();
    const texts = got.texts();
    assert.equal(texts.length, 75, `no duplicates: ${texts.join(",")}`);
    assert.deepEqual(
      texts.filter((t) => t.startsWith("m")),
      Array.from({ length: 70 }, (_, i) => `m${i}`),
    );
    assert.deepEqual(
      texts.filter((t) => t.startsWith("offline")),
      ["offline0", "offline1", "offline2", "offline3", "offline4"],
    );
    assert.equal(sub.offlineBytes, 0);
    // m30..m59 were published while the subscription was away: caught up from the log
    // (what is stored while that replay runs may come through it too, flagged replayed).
    const replayed = new Set(got.msgs.filter((m) => m.replayed).map((m) => m.string()));
    for (let i = 30; i < 60; i++) assert.ok(replayed.has(`m${i}`), `m${i} replayed`);
    for (let i = 0; i < 30; i++) assert.ok(!replayed.has(`m${i}`), `m${i} live`);
    const types = events.events.map((e) => e.type);
    assert.deepEqual(types.filter((t) => t !== "reconnecting").slice(0, 3), [
      "disconnected",
      "connected",
      "resumed",
    ]);
    const reconnecting = events.events.find((e) => e.type === "reconnecting");
    assert.ok(reconnecting && reconnecting.type === "reconnecting" && reconnecting.attempt === 1);
    assert.equal(reconnecting.delayMs, 1499);
    sub.close();
    pub.close();
  });
}

test("the offline buffer is bounded: a publish that does not fit throws OfflineBufferFull", async () => {
  const ternd = await start();
  const c = await connect({
    servers: ternd.tcpUrl,
    offlineBufferBytes: 1000,
    reconnect: { baseMs: 20, capMs: 50 },
  });
  const events = recordEvents(c);
  await ternd.stop();
  await events.seen("disconnected");
  let sent = 0;
  /** @type {unknown} */
  let error;
  try {
    for (; sent < 100; sent++) c.publish("offline.full", new Uint8Array(100));
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof TernError && error.kind === "OfflineBufferFull", String(error));
  assert.match(error.message, /offline buffer full .* while disconnected/);
  assert.ok(sent >= 5 && sent < 10, `${sent} fit`);
  assert.ok(c.offlineBytes <= 1000);
  // An acknowledged publish that does not fit is rejected the same way.
  await assert.rejects(
    c.publishAcked("offline.full", new Uint8Array(100)),
    (e) => e instanceof TernError && e.kind === "OfflineBufferFull",
  );
  await ternd.run();
  const other = await connect({ servers: ternd.tcpUrl });
  const held = collect(other.subscribe("offline.full", { start: { last: 100 } }));
  await events.seen("resumed");
  await held.first(sent, 5000);
  await other.flush();
  assert.equal(held.msgs.length, sent);
  c.close();
  other.close();
});

test("a broker that stops answering: heartbeat timeout, then reconnection", async () => {
  const ternd = await start();
  const c = await connect({
    servers: ternd.tcpUrl,
    pingIntervalMs: 100,
    serverTimeoutMs: 400,
    reconnect: { baseMs: 20, capMs: 50 },
  });
  const events = recordEvents(c);
  ternd.signal("SIGSTOP");
  try {
    const [d] = await events.seen("disconnected", 1, 3000);
    assert.ok(d && d.type === "disconnected" && d.reason === "heartbeatTimeout", JSON.stringify(d));
  } finally {
    ternd.signal("SIGCONT");
  }
  await events.seen("resumed", 1, 5000);
  await c.flush();
  c.close();
});

test("a WebSocket whose network goes silent: heartbeat timeout at once, then a resume with every message once", async () => {
  const ternd = await start();
  const proxy = await Blackhole.start(ternd.wsPort);
  try {
    const c = await connect({
      servers: proxy.wsUrl,
      WebSocket,
      pingIntervalMs: 100,
      serverTimeoutMs: 400,
      connectTimeoutMs: 500,
      reconnect: { baseMs: 20, capMs: 100 },
    });
    const pub = await connect({ servers: ternd.tcpUrl });
    const events = recordEvents(c);
    const s = c.subscribe("silent.net");
    await s.ready;
    const got = collect(s);
    for (let i = 0; i < 10; i++) await pub.publishAcked("silent.net", `m${i}`);
    await got.first(10);

    proxy.cut();
    for (let i = 10; i < 20; i++) await pub.publishAcked("silent.net", `m${i}`);
    // Without an answer to its closing handshake (ws waits 30 s for one), still at once.
    const [d] = await events.seen("disconnected", 1, 3000);
    assert.ok(d && d.type === "disconnected" && d.reason === "heartbeatTimeout", JSON.stringify(d));
    assert.equal(got.msgs.length, 10, "nothing crossed the silent network");
    await sleep(300); // a reconnection attempt or two into the void
    proxy.restore();
    await events.seen("resumed", 1, 5000);
    for (let i = 20; i < 30; i++) await pub.publishAcked("silent.net", `m${i}`);
    await got.first(30, 5000);
    await c.flush();
    assert.deepEqual(
      got.texts(),
      Array.from({ length: 30 }, (_, i) => `m${i}`),
    );
    c.close();
    pub.close();
  } finally {
    await proxy.close();
  }
});

test("GOAWAY: reported, then a reconnection without backoff", async () => {
  const ternd = await start(["--lame-duck-duration", "1s", "--lame-duck-grace-period", "100ms"]);
  const c = await connect({ servers: ternd.tcpUrl, reconnect: { baseMs: 5000, capMs: 5000 } });
  const events = recordEvents(c);
  ternd.signal("SIGUSR2");
  const [g] = await events.seen("goAway", 1, 3000);
  assert.ok(
    g && g.type === "goAway" && g.closeWithinMs > 0 && g.closeWithinMs <= 1000,
    JSON.stringify(g),
  );
  const [d] = await events.seen("disconnected", 1, 5000);
  assert.ok(d && d.type === "disconnected" && d.reason === "goingAway", JSON.stringify(d));
  const [r] = await events.seen("reconnecting", 1, 1000);
  assert.ok(r && r.type === "reconnecting" && r.delayMs === 0, JSON.stringify(r));
  await ternd.stop();
  await ternd.run();
  // Attempts after the first one back off (up to 5 s here): wait for the broker to be back.
  await within(c.flush(12_000), 13_000, "reconnection after the lame duck restart");
  c.close();
});

test("reconnect: false closes the client when the connection is lost; maxAttempts gives up", async () => {
  const ternd = await start();
  const once = await connect({ servers: ternd.tcpUrl, reconnect: false });
  const limited = await connect({
    servers: ternd.tcpUrl,
    reconnect: { baseMs: 10, capMs: 20, maxAttempts: 2 },
  });
  const sub = limited.subscribe("x");
  await ternd.stop();
  const e1 = await within(once.closed, 3000, "close without reconnect");
  assert.ok(e1 instanceof TernError && e1.kind === "Disconnected");
  const e2 = await within(limited.closed, 3000, "giving up");
  assert.ok(
    e2 instanceof TernError && e2.kind === "Connect" && /gave up after 2/.test(e2.message),
    String(e2),
  );
  await assert.rejects(sub.next(100), (e) => e instanceof TernError && e.kind === "Unsubscribed");
  await until(() => sub.closed, 100, "subscription ended");
  await sleep(1);
});

test("a resume from before what the log holds: gapNotice, then everything held", async () => {
  const ternd = await start(["--log-size", "1MiB", "--max-payload", "64KiB"]);
  const c = await connect({ servers: ternd.tcpUrl });
  const payload = new Uint8Array(1024);
  for (let i = 0; i < 2000; i++) c.publish("gap.x", payload);
  const last = await c.publishAcked("gap.x", "last");
  const events = recordEvents(c);
  const token = { epoch: c.info?.logEpoch ?? 0n, lastSequences: [] };
  const sub = collect(c.subscribe("gap.x", { start: { resume: token } }));
  const [gap] = await events.seen("gapNotice", 1, 5000);
  assert.ok(gap && gap.type === "gapNotice");
  assert.equal(gap.subject, "gap.x");
  assert.equal(gap.shard, last.shard);
  assert.equal(gap.requested, 1n);
  assert.ok(gap.oldest > 1n && gap.oldest <= last.sequence);
  const held = Number(last.sequence - gap.oldest) + 1;
  await sub.first(held, 5000);
  assert.equal(sub.msgs[0]?.sequence, gap.oldest);
  assert.equal(sub.msgs[held - 1]?.string(), "last");
  c.close();
});
