// @ts-check
// Callback subscriptions (`subscribe(subject, { callback })`): messages handed over as they
// are decoded, in order, with no client queue; the end with an error (a refusal) as one call
// with the error; unsubscribe now and after N; no client-side drops whatever `capacity`
// says; a callback that throws stops neither the subscription nor the connection.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { ErrorCode, TernError, connect } from "tern-client";
import { PACKAGE_DIR, Ternd, collect, sleep, until, within } from "./harness.js";

/** @type {Ternd} */
let ternd;
before(async () => {
  ternd = await Ternd.start();
});
after(async () => {
  await ternd?.close();
});

/**
 * @param {import("tern-client").Msg[]} msgs
 */
const texts = (msgs) => msgs.map((m) => m.string());

test("messages reach the callback in order (as an iterated subscription's); next() refuses", async () => {
  const c = await connect({ servers: ternd.tcpUrl });
  /** @type {import("tern-client").Msg[]} */
  const got = [];
  /** @type {unknown[]} */
  const errors = [];
  const sub = c.subscribe("cb.order", {
    callback: (err, msg) => {
      if (err !== undefined) errors.push(err);
      else got.push(msg);
    },
  });
  await within(sub.ready, 2000, "SUBSCRIBED");
  assert.equal(sub.isCallback, true);
  assert.throws(
    () => c.subscribe("cb.order", { callback: /** @type {any} */ ("nope") }),
    (e) => e instanceof TernError && e.kind === "InvalidOption",
  );
  const iterated = collect(c.subscribe("cb.order"));
  for (let i = 0; i < 500; i++) c.publish("cb.order", `${i}`, { headers: { N: `${i}` } });
  await c.flush();
  await until(() => got.length === 500, 5000, "500 messages");
  assert.deepEqual(
    texts(got),
    Array.from({ length: 500 }, (_, i) => `${i}`),
  );
  assert.equal(got[7]?.headers?.get("N"), "7");
  assert.equal(got[7]?.subject, "cb.order");
  // The same order as an iterated subscription's.
  assert.deepEqual(texts(await iterated.first(500)), texts(got));
  assert.equal(sub.pending, 0);
  await assert.rejects(sub.next(10), (e) => e instanceof TernError && e.kind === "InvalidOption");
  await assert.rejects(
    sub[Symbol.asyncIterator]().next(),
    (e) => e instanceof TernError && e.kind === "InvalidOption",
  );
  assert.deepEqual(errors, []);
  c.close();
  await sleep(20);
  // An ordinary end (here the client's close) makes no call.
  assert.deepEqual(errors, []);
  assert.equal(sub.closed, true);
});

test("a refused callback subscription: one call with the error, ready rejects", async () => {
  const c = await connect({ servers: ternd.tcpUrl });
  /** @type {unknown[]} */
  const calls = [];
  const sub = c.subscribe("cb.refused", {
    maxQueueMessages: 0xffffffff,
    callback: (err, msg) => calls.push([err, msg]),
  });
  await assert.rejects(
    within(sub.ready, 2000, "refusal"),
    (e) => e instanceof TernError && e.kind === "Refused" && e.code === ErrorCode.InvalidOption,
  );
  await sleep(20);
  assert.equal(calls.length, 1);
  const [err, msg] = /** @type {[unknown, unknown]} */ (calls[0]);
  assert.ok(err instanceof TernError && err.kind === "Refused", String(err));
  assert.equal(err.code, ErrorCode.InvalidOption);
  assert.equal(msg, undefined);
  assert.equal(sub.closed, true);
  c.close();
});

test("unsubscribe after N, and from inside the callback", async () => {
  const c = await connect({ servers: ternd.tcpUrl });
  /** @type {string[]} */
  const afterTwo = [];
  /** @type {string[]} */
  const inside = [];
  /** @type {unknown[]} */
  const errors = [];
  const a = c.subscribe("cb.unsub", {
    callback: (err, msg) => (err ? errors.push(err) : afterTwo.push(msg.string())),
  });
  const b = c.subscribe("cb.unsub", {
    callback: (err, msg) => {
      if (err) return void errors.push(err);
      inside.push(msg.string());
      if (inside.length === 3) b.unsubscribe();
    },
  });
  await Promise.all([a.ready, b.ready]);
  a.unsubscribe(2);
  for (let i = 0; i < 6; i++) c.publish("cb.unsub", `${i}`);
  await c.flush();
  await sleep(50);
  assert.deepEqual(afterTwo, ["0", "1"]);
  assert.deepEqual(inside, ["0", "1", "2"]);
  assert.equal(a.closed, true);
  assert.equal(b.closed, true);
  assert.deepEqual(errors, []);
  c.close();
});

test("no client-side drops: capacity does not bound a callback subscription", async () => {
  const c = await connect({ servers: ternd.tcpUrl, subscriptionCapacity: 2 });
  /** @type {import("tern-client").ClientEvent[]} */
  const drops = [];
  c.on("dropNotice", (e) => drops.push(e));
  /** @type {string[]} */
  const got = [];
  const sub = c.subscribe("cb.drops", {
    capacity: 1,
    callback: (err, msg) => {
      if (err === undefined) got.push(msg.string());
    },
  });
  await sub.ready;
  for (let i = 0; i < 5; i++) c.publish("cb.drops", `${i}`);
  await c.flush();
  await until(() => got.length === 5, 2000, "5 messages");
  assert.deepEqual(got, ["0", "1", "2", "3", "4"]);
  assert.equal(sub.dropped, 0);
  assert.equal(drops.length, 0);
  c.close();
});

test("a callback that throws: rethrown apart, the subscription and connection go on", async () => {
  const run = promisify(execFile);
  const { stdout } = await run(
    process.execPath,
    [join(PACKAGE_DIR, "test/fixtures/throwing-callback.js"), ternd.tcpUrl, "cb.throws"],
    { cwd: PACKAGE_DIR, timeout: 20_000 },
  );
  const report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "");
  assert.deepEqual(report, {
    got: ["a", "b", "last"],
    thrown: ["boom a", "boom b", "boom last"],
    closed: false,
  });
});
