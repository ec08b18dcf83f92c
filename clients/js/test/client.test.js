// @ts-check
// Every call of the client against a real ternd, over TCP and over WebSocket (`/tern`):
// publish (all options), acknowledged publish and its refusals, subscribe with each start,
// queue groups, unsubscribe now and after N, request/reply and its timeout, flush, drain,
// close, and the error paths the client checks itself.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { ErrorCode, TernError, connect } from "tern-client";
import { Ternd, collect, within } from "./harness.js";

/** @type {Ternd} */
let ternd;
before(async () => {
  ternd = await Ternd.start();
});
after(async () => {
  await ternd?.close();
});

/**
 * @param {unknown} e
 * @param {import("tern-client").TernErrorKind} kind
 * @param {number} [code]
 */
function isTernError(e, kind, code) {
  assert.ok(e instanceof TernError, `a TernError, got ${String(e)}`);
  assert.equal(e.kind, kind, e.message);
  if (code !== undefined) assert.equal(e.code, code, e.message);
  return true;
}

for (const transport of ["tcp", "ws"]) {
  describe(`over ${transport}`, () => {
    const url = () => (transport === "tcp" ? ternd.tcpUrl : ternd.wsUrl);
    /** @param {Partial<import("tern-client").ConnectOptions>} [options] */
    const open = (options = {}) =>
      connect({ servers: url(), name: `test-${transport}`, WebSocket, ...options });
    let n = 0;
    const subject = () => `t.${transport}.${++n}`;

    test("publish and subscribe carry every field", async () => {
      const c = await open();
      const s = subject();
      const sub = c.subscribe(`${s}.>`);
      await within(sub.ready, 2000, "SUBSCRIBED");
      const got = collect(sub);
      c.publish(`${s}.a`, new Uint8Array([0, 1, 2, 255]), {
        priority: 5,
        headers: { From: "ann", Many: ["1", "2"] },
        reply: "reply.here",
      });
      c.publish(`${s}.b`, "text");
      const [a, b] = await got.first(2);
      assert.ok(a && b);
      assert.equal(a.subject, `${s}.a`);
      assert.deepEqual(a.payload, new Uint8Array([0, 1, 2, 255]));
      assert.equal(a.priority, 5);
      assert.equal(a.reply, "reply.here");
      assert.equal(a.headers?.get("from"), "ann");
      assert.deepEqual(a.headers?.getAll("Many"), ["1", "2"]);
      assert.equal(
        new TextDecoder().decode(a.rawHeaders),
        "NATS/1.0\r\nFrom: ann\r\nMany: 1\r\nMany: 2\r\n\r\n",
      );
      assert.equal(a.replayed, false);
      assert.ok(a.sequence > 0n);
      assert.ok(a.timestamp > BigInt(Date.now() - 60_000) * 1_000_000n);
      assert.equal(b.string(), "text");
      assert.equal(b.headers, undefined);
      assert.equal(
        b.sequence,
        a.sequence + 1n,
        "one connection's messages are in one shard, in order",
      );
      const token = sub.resumeToken();
      assert.ok(token);
      assert.equal(token.epoch, c.info?.logEpoch);
      assert.equal(token.lastSequences[b.shard], b.sequence);
      c.close();
    });

    test("publishAcked: stored, duplicate, refused with its code", async () => {
      const c = await open();
      const s = subject();
      const ack = await c.publishAcked(s, "x", { messageId: `id-${s}` });
      assert.equal(ack.duplicate, false);
      assert.ok(ack.sequence > 0n);
      const again = await c.publishAcked(s, "x", { messageId: `id-${s}` });
      assert.deepEqual(again, { ...ack, duplicate: true });
      await assert.rejects(c.publishAcked(s, "x", { messageId: "m".repeat(300) }), (e) =>
        isTernError(e, "Refused", ErrorCode.InvalidOption),
      );
      c.close();
    });

    test("coalescing key and priority are accepted; invalid input is refused locally", async () => {
      const c = await open();
      const s = subject();
      await c.publishAcked(s, "v1", { coalescingKey: "k", priority: 7 });
      assert.throws(
        () => c.publish("a..b"),
        (e) => isTernError(e, "InvalidSubject"),
      );
      assert.throws(
        () => c.publish("a.*"),
        (e) => isTernError(e, "InvalidSubject"),
      );
      assert.throws(
        () => c.publish(s, "x", { priority: 8 }),
        (e) => isTernError(e, "InvalidOption"),
      );
      assert.throws(
        () => c.publish(s, "x", { messageId: "" }),
        (e) => isTernError(e, "InvalidOption"),
      );
      assert.throws(
        () => c.publish(s, new Uint8Array(1_048_577)),
        (e) => isTernError(e, "PayloadTooLarge"),
      );
      assert.throws(
        () => c.subscribe("a.>.b"),
        (e) => isTernError(e, "InvalidSubject"),
      );
      assert.throws(
        () => c.subscribe("a", { queue: "q", lossless: true }),
        (e) => isTernError(e, "InvalidOption"),
      );
      assert.throws(
        () => c.subscribe("a.*", { presence: "{}" }),
        (e) => isTernError(e, "InvalidOption"),
      );
      c.close();
    });

    test("start positions: last N, resume token, since a time", async () => {
      const c = await open();
      const s = subject();
      const t0 = new Date(Date.now() - 1);
      /** @type {import("tern-client").PublishAck[]} */
      const acks = [];
      for (let i = 0; i < 5; i++) acks.push(await c.publishAcked(s, `m${i}`));
      const last = collect(c.subscribe(s, { start: { last: 2 } }));
      assert.deepEqual(
        (await last.first(2)).map((m) => [m.string(), m.replayed]),
        [
          ["m3", true],
          ["m4", true],
        ],
      );
      const a2 = acks[2];
      assert.ok(a2);
      const lastSequences = [0n, 0n];
      lastSequences[a2.shard] = a2.sequence;
      const resumed = collect(
        c.subscribe(s, { start: { resume: { epoch: c.info?.logEpoch ?? 0n, lastSequences } } }),
      );
      assert.deepEqual(
        (await resumed.first(2)).map((m) => m.string()),
        ["m3", "m4"],
      );
      const since = collect(c.subscribe(s, { start: { since: t0 } }));
      assert.deepEqual(
        (await since.first(5)).map((m) => m.string()),
        ["m0", "m1", "m2", "m3", "m4"],
      );
      c.publish(s, "live");
      assert.equal((await resumed.first(3))[2]?.string(), "live");
      assert.equal((await since.first(6))[5]?.string(), "live");
      assert.equal(last.msgs.length <= 3, true);
      c.close();
    });

    test("a token from another epoch: epochMismatch event, everything held replayed", async () => {
      const c = await open();
      const s = subject();
      await c.publishAcked(s, "held");
      const events = [];
      c.on("epochMismatch", (e) => events.push(e));
      const sub = collect(
        c.subscribe(s, { start: { resume: { epoch: 12345n, lastSequences: [] } } }),
      );
      assert.equal((await sub.first(1))[0]?.string(), "held");
      assert.equal(events.length, 1);
      c.close();
    });

    test("queue groups share the messages; lossless and queue bounds are accepted", async () => {
      const c = await open();
      const s = subject();
      const q1 = collect(c.subscribe(s, { queue: "workers" }));
      const q2 = collect(
        c.subscribe(s, { queue: "workers", maxQueueMessages: 100, maxQueueBytes: 1 << 20 }),
      );
      const lossless = c.subscribe(s, { lossless: true });
      await lossless.ready;
      const all = collect(lossless);
      for (let i = 0; i < 20; i++) c.publish(s, `${i}`);
      await all.first(20);
      await c.flush();
      assert.equal(q1.msgs.length + q2.msgs.length, 20);
      c.close();
    });

    test("a subscription the broker refuses ends with Refused and the code", async () => {
      const c = await open();
      const errors = [];
      c.on("error", (e) => errors.push(e));
      const sub = c.subscribe(subject(), { maxQueueMessages: 0xffffffff });
      await assert.rejects(within(sub.ready, 2000, "refusal"), (e) =>
        isTernError(e, "Refused", ErrorCode.InvalidOption),
      );
      await assert.rejects(sub.next(1000), (e) =>
        isTernError(e, "Refused", ErrorCode.InvalidOption),
      );
      assert.equal(errors.length, 1);
      c.close();
    });

    test("unsubscribe now, and after N", async () => {
      const c = await open();
      const s = subject();
      const now = c.subscribe(s);
      const afterTwo = c.subscribe(s);
      await afterTwo.ready;
      const got = collect(afterTwo);
      afterTwo.unsubscribe(2);
      now.unsubscribe();
      assert.equal(now.closed, true);
      for (let i = 0; i < 5; i++) c.publish(s, `${i}`);
      await c.flush();
      await within(got.done, 2000, "the subscription to end after 2");
      assert.deepEqual(got.texts(), ["0", "1"]);
      await assert.rejects(now.next(100), (e) => isTernError(e, "Unsubscribed"));
      c.close();
    });

    test("request/reply, its timeout, and a receive timeout", async () => {
      const c = await open();
      const s = subject();
      const svc = c.subscribe(s);
      void (async () => {
        for await (const m of svc)
          m.respond(`re: ${m.string()}`, { headers: { Seen: m.headers?.get("Ask") ?? "" } });
      })();
      await svc.ready;
      const reply = await c.request(s, "hi", { headers: { Ask: "1" }, timeoutMs: 2000 });
      assert.equal(reply.string(), "re: hi");
      assert.equal(reply.headers?.get("Seen"), "1");
      // Nobody receives it: the HELLO asked for no-responders statuses, so it is answered
      // at once, long before its timeout.
      await assert.rejects(c.request(`${s}.nobody`, "x", { timeoutMs: 30000 }), (e) =>
        isTernError(e, "NoResponders"),
      );
      const idle = c.subscribe(`${s}.idle`);
      await assert.rejects(idle.next(50), (e) => isTernError(e, "Timeout"));
      c.close();
    });

    test("drain: queued messages stay readable, acks are waited for; close rejects what waits", async () => {
      const c = await open();
      const s = subject();
      const sub = c.subscribe(s);
      await sub.ready;
      for (let i = 0; i < 3; i++) c.publish(s, `${i}`);
      const ack = c.publishAcked(s, "last");
      await c.drain(2000);
      assert.ok((await ack).sequence > 0n);
      const got = collect(sub);
      await within(got.done, 1000, "iteration to end");
      assert.deepEqual(got.texts(), ["0", "1", "2", "last"]);
      assert.equal(c.isClosed, true);
      assert.throws(
        () => c.publish(s),
        (e) => isTernError(e, "Closed"),
      );

      const d = await open();
      const waiting = d.request(`${s}.never`, "x", { timeoutMs: 5000 });
      d.close();
      await assert.rejects(waiting, (e) => isTernError(e, "Closed"));
      assert.equal(await d.closed, undefined);
    });

    test("a client-side queue that is full drops and reports it", async () => {
      const c = await open({ subscriptionCapacity: 2 });
      const s = subject();
      /** @type {import("tern-client").ClientEvent[]} */
      const drops = [];
      c.on("dropNotice", (e) => drops.push(e));
      const sub = c.subscribe(s);
      await sub.ready;
      for (let i = 0; i < 5; i++) c.publish(s, `${i}`);
      await c.flush();
      assert.equal(sub.dropped, 3);
      assert.equal(drops.length, 3);
      assert.equal(drops[0]?.type === "dropNotice" && drops[0].source, "client");
      assert.deepEqual([(await sub.next()).string(), (await sub.next()).string()], ["0", "1"]);
      c.close();
    });
  });
}

test("connect errors: nothing listening, a bad address", async () => {
  await assert.rejects(connect({ servers: "tern://127.0.0.1:1", connectTimeoutMs: 1000 }), (e) =>
    isTernError(e, "Connect"),
  );
  await assert.rejects(connect({ servers: "http://x" }), (e) => isTernError(e, "InvalidOption"));
});

describe("authentication", () => {
  /** @type {Ternd} */
  let secured;
  before(async () => {
    secured = await Ternd.start(["--auth-token", "s3cret"]);
  });
  after(async () => {
    await secured?.close();
  });

  test("a token is accepted; none is AuthorizationViolation, not retried", async () => {
    const c = await connect({ servers: secured.tcpUrl, token: "s3cret" });
    await c.publishAcked("auth.ok", "x");
    c.close();
    await assert.rejects(connect({ servers: secured.tcpUrl, token: "wrong" }), (e) =>
      isTernError(e, "Server", ErrorCode.AuthorizationViolation),
    );
    await assert.rejects(connect({ servers: secured.wsUrl, WebSocket }), (e) =>
      isTernError(e, "Server", ErrorCode.AuthorizationViolation),
    );
  });
});
