// Publish and subscribe through nats.ws: order, wildcards, headers and queue groups.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { headers } from "nats.ws";
import { Collector, Server, sleep } from "./harness.js";

/** @type {Server} */
let server;
/** @type {import("nats.ws").NatsConnection} */
let nc;

before(async () => {
  server = await Server.start();
  nc = await server.connect();
});

after(async () => {
  await nc?.close();
  await server?.close();
});

describe("publish and subscribe", () => {
  test("the server's INFO says headers are supported, with its payload limit", () => {
    assert.ok(nc.info, "INFO received");
    assert.equal(nc.info.headers, true);
    assert.ok(nc.info.max_payload >= 1024 * 1024);
    assert.equal(typeof nc.info.server_id, "string");
  });

  test("a subscriber gets one connection's messages in the order published", async () => {
    const sub = new Collector(nc, "greet.world");
    await nc.flush(); // the SUB has reached the server before the first PUB
    const publisher = await server.connect();
    const sent = Array.from({ length: 50 }, (_, i) => `hello ${i}`);
    for (const text of sent) {
      publisher.publish("greet.world", text);
    }
    await publisher.flush();
    const got = await sub.first(sent.length);
    assert.deepEqual(
      got.map((m) => m.string()),
      sent,
    );
    assert.ok(got.every((m) => m.subject === "greet.world"));
    await publisher.close();
    sub.sub.unsubscribe();
  });

  test("an empty payload and a binary payload arrive unchanged", async () => {
    const sub = new Collector(nc, "bytes.test");
    await nc.flush();
    const binary = Uint8Array.from({ length: 256 }, (_, i) => i);
    nc.publish("bytes.test");
    nc.publish("bytes.test", binary);
    const [empty, bytes] = await sub.first(2);
    assert.equal(empty.data.length, 0);
    assert.deepEqual(bytes.data, binary);
    sub.sub.unsubscribe();
  });

  test("a 200 KB payload arrives whole (ternd writes WebSocket frames of at most 64 KiB)", async () => {
    const sub = new Collector(nc, "big.payload");
    await nc.flush();
    const big = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 7) & 0xff);
    nc.publish("big.payload", big);
    const [msg] = await sub.first(1);
    assert.deepEqual(msg.data, big);
    sub.sub.unsubscribe();
  });

  test("a subscription with a maximum (UNSUB sid max) ends after that many", async () => {
    /** @type {string[]} */
    const got = [];
    const sub = nc.subscribe("max.three", {
      max: 3,
      callback: (_, msg) => {
        got.push(msg.string());
      },
    });
    const witness = new Collector(nc, "max.three");
    await nc.flush();
    for (let i = 1; i <= 5; i++) {
      nc.publish("max.three", String(i));
    }
    await witness.first(5); // all five were delivered, so past the limited one
    assert.deepEqual(got, ["1", "2", "3"]);
    assert.equal(sub.isClosed(), true);
    witness.sub.unsubscribe();
  });

  test("an unsubscribed subscription gets nothing more", async () => {
    const sub = new Collector(nc, "gone.soon");
    await nc.flush();
    nc.publish("gone.soon", "before");
    await sub.first(1);
    sub.sub.unsubscribe();
    const witness = new Collector(nc, "gone.soon");
    await nc.flush();
    nc.publish("gone.soon", "after");
    await witness.first(1); // delivered to the live subscription, so past the dead one
    assert.deepEqual(sub.texts(), ["before"]);
    witness.sub.unsubscribe();
  });
});

describe("wildcards", () => {
  test("* matches exactly one token and > one or more", async () => {
    const star = new Collector(nc, "wild.*");
    const starMiddle = new Collector(nc, "wild.*.end");
    const tail = new Collector(nc, "wild.>");
    const done = new Collector(nc, "wild-done");
    await nc.flush();
    for (const subject of [
      "wild",
      "wild.a",
      "wild.a.b",
      "wild.a.end",
      "wild.a.b.end",
      "other.a",
      "wildly.a",
    ]) {
      nc.publish(subject, subject);
    }
    nc.publish("wild-done");
    // One connection's messages come in order, so once the marker is here, all are.
    await done.first(1);
    assert.deepEqual(star.texts(), ["wild.a"]);
    assert.deepEqual(starMiddle.texts(), ["wild.a.end"]);
    assert.deepEqual(tail.texts(), ["wild.a", "wild.a.b", "wild.a.end", "wild.a.b.end"]);
    assert.deepEqual(
      star.msgs.map((m) => m.subject),
      ["wild.a"],
    );
    for (const c of [star, starMiddle, tail, done]) {
      c.sub.unsubscribe();
    }
  });

  test("overlapping wildcard subscriptions each get their copy", async () => {
    const a = new Collector(nc, "ov.*.x");
    const b = new Collector(nc, "ov.>");
    const c = new Collector(nc, "ov.y.x");
    await nc.flush();
    nc.publish("ov.y.x", "one");
    await Promise.all([a.first(1), b.first(1), c.first(1)]);
    for (const each of [a, b, c]) {
      assert.deepEqual(each.texts(), ["one"]);
      each.sub.unsubscribe();
    }
  });
});

describe("headers", () => {
  test("headers, repeated values and a payload travel together", async () => {
    const sub = new Collector(nc, "hdr.test");
    await nc.flush();
    const h = headers();
    h.set("Trace-Id", "abc-123");
    h.append("Multi", "one");
    h.append("Multi", "two");
    nc.publish("hdr.test", "with headers", { headers: h });
    const [msg] = await sub.first(1);
    assert.equal(msg.string(), "with headers");
    assert.ok(msg.headers, "the message has headers");
    assert.equal(msg.headers.get("Trace-Id"), "abc-123");
    assert.deepEqual(msg.headers.values("Multi"), ["one", "two"]);
    assert.equal(msg.headers.hasError, false);
    sub.sub.unsubscribe();
  });

  test("headers with an empty payload, and a message without headers has none", async () => {
    const sub = new Collector(nc, "hdr.empty");
    await nc.flush();
    const h = headers();
    h.set("Only", "headers");
    nc.publish("hdr.empty", undefined, { headers: h });
    nc.publish("hdr.empty", "plain");
    const [withHeaders, plain] = await sub.first(2);
    assert.equal(withHeaders.data.length, 0);
    assert.equal(withHeaders.headers?.get("Only"), "headers");
    assert.equal(plain.headers, undefined);
    sub.sub.unsubscribe();
  });
});

describe("queue groups", () => {
  test("each message goes to one member of the group, and to every plain subscriber", async () => {
    const members = [
      new Collector(nc, "jobs.work", { queue: "workers" }),
      new Collector(nc, "jobs.work", { queue: "workers" }),
    ];
    const otherConn = await server.connect();
    members.push(new Collector(otherConn, "jobs.work", { queue: "workers" }));
    const other = new Collector(nc, "jobs.work", { queue: "auditors" });
    const plain = new Collector(nc, "jobs.*");
    await Promise.all([nc.flush(), otherConn.flush()]);
    const count = 300;
    for (let i = 0; i < count; i++) {
      nc.publish("jobs.work", String(i));
    }
    await plain.first(count);
    await other.first(count);
    const expected = Array.from({ length: count }, (_, i) => String(i));
    // A queue delivery to a member is not ordered with the plain one: wait until the group
    // has them all, then check each went to exactly one member.
    const deadline = Date.now() + 5_000;
    while (members.reduce((n, m) => n + m.msgs.length, 0) < count && Date.now() < deadline) {
      await sleep(10);
    }
    const delivered = members.flatMap((m) => m.texts());
    assert.equal(delivered.length, count, "the group got every message once");
    assert.deepEqual([...delivered].sort(), [...expected].sort());
    for (const [i, member] of members.entries()) {
      // 300 messages over 3 members: an empty member would mean no balancing at all.
      assert.ok(member.msgs.length > 0, `member ${i} got some messages`);
    }
    assert.deepEqual(other.texts(), expected);
    assert.deepEqual(plain.texts(), expected);
    await otherConn.close();
  });
});
