// @ts-check
// Presence on the binary port: joining a room with info, its events (snapshot, join,
// leave; a snapshot sent in several frames comes as one), the view of its members,
// PRESENCE_QUERY pages and counts, refusals, and the member token re-sent on the
// resubscription after a lost connection (the others see no leave and no join).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ErrorCode, TernError, connect } from "tern-client";
import { Ternd, sleep, within } from "./harness.js";

/** @type {Ternd} */
let ternd;
before(async () => {
  ternd = await Ternd.start();
});
after(async () => {
  await ternd?.close();
});

/**
 * The next presence events of a view until `pred` holds for one, with a deadline.
 * @param {import("tern-client").PresenceView} view
 * @param {(e: import("tern-client").PresenceEvent) => boolean} pred
 */
async function waitFor(view, pred, ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const e = await view.next(Math.max(1, deadline - Date.now()));
    if (pred(e)) return e;
  }
}

test("join, watch, query, leave", async () => {
  const a = await connect({ servers: ternd.tcpUrl, name: "ann" });
  const b = await connect({ servers: ternd.wsUrl, name: "bob" });
  const subA = a.subscribe("room.1", { presence: '{"who":"ann"}', presenceEvents: true });
  const viewA = subA.presence;
  assert.ok(viewA);
  // The broker sends the room's snapshot (empty), then this join's answer, then the join.
  const snap = await waitFor(viewA, (e) => e.type === "snapshot");
  assert.ok(snap.type === "snapshot" && snap.members.length === 0 && snap.count === 0);
  const joined = await waitFor(viewA, (e) => e.type === "joined");
  assert.ok(joined.type === "joined" && joined.user.startsWith("ann#") && joined.count === 1);
  const self = await waitFor(viewA, (e) => e.type === "join");
  assert.ok(self.type === "join" && self.member.user === joined.user);
  assert.equal(new TextDecoder().decode(self.member.info), '{"who":"ann"}');
  assert.equal(viewA.user, joined.user);

  const subB = b.subscribe("room.1", { presence: "bob's info" });
  const bJoined = await waitFor(
    /** @type {import("tern-client").PresenceView} */ (subB.presence),
    (e) => e.type === "joined",
  );
  assert.ok(bJoined.type === "joined" && bJoined.user.startsWith("bob#"));
  const join = await waitFor(viewA, (e) => e.type === "join");
  assert.ok(join.type === "join" && join.count === 2 && join.member.connections === 1);
  assert.deepEqual(
    viewA.members()?.map((m) => m.user.split("#")[0]),
    ["ann", "bob"],
  );

  assert.equal(await a.presenceCount("room.1"), 2);
  const page = await a.presence("room.1", { offset: 1, limit: 10 });
  assert.equal(page.count, 2);
  assert.equal(page.offset, 1);
  assert.deepEqual(
    page.members.map((m) => m.user.split("#")[0]),
    ["bob"],
  );
  await assert.rejects(
    a.presence("room.1", { limit: 5000 }),
    (e) => e instanceof TernError && e.code === ErrorCode.InvalidOption,
  );
  await assert.rejects(
    a.presence("room.*"),
    (e) => e instanceof TernError && e.kind === "InvalidSubject",
  );

  // The room's messages still come as messages.
  b.publish("room.1", "hello room");
  assert.equal((await subA.next(2000)).string(), "hello room");

  subB.unsubscribe();
  const leave = await waitFor(viewA, (e) => e.type === "leave");
  assert.ok(leave.type === "leave" && leave.count === 1 && leave.user.startsWith("bob#"));
  assert.equal(viewA.members()?.length, 1);
  a.close();
  b.close();
});

test("a snapshot of many members, sent in several frames, comes as one", async () => {
  // Members with 60 KiB of info each: their snapshot is over 256 KiB, so several frames.
  const big = await Ternd.start(["--max-presence-info", "64KiB"]);
  try {
    const clients = await Promise.all(
      Array.from({ length: 6 }, (_, i) => connect({ servers: big.tcpUrl, name: `m${i}` })),
    );
    for (const c of clients) {
      const s = c.subscribe("room.many", { presence: "x".repeat(60_000) });
      await waitFor(
        /** @type {import("tern-client").PresenceView} */ (s.presence),
        (e) => e.type === "joined",
      );
    }
    const w = await connect({ servers: big.tcpUrl });
    const watch = w.subscribe("room.many", { presenceEvents: true });
    const snap = await waitFor(
      /** @type {import("tern-client").PresenceView} */ (watch.presence),
      (e) => e.type === "snapshot",
    );
    assert.ok(
      snap.type === "snapshot" && snap.count === 6,
      `count ${snap.type === "snapshot" && snap.count}`,
    );
    assert.deepEqual(
      snap.members.map((m) => m.user.split("#")[0]),
      ["m0", "m1", "m2", "m3", "m4", "m5"],
    );
    const page = await w.presence("room.many", { limit: 1000, timeoutMs: 3000 });
    assert.equal(page.members.length, 6);
    for (const c of [...clients, w]) c.close();
  } finally {
    await big.close();
  }
});

test("the member token keeps a reconnecting client the same member", async () => {
  const watcher = await connect({ servers: ternd.tcpUrl, name: "watcher" });
  const member = await connect({
    servers: ternd.tcpUrl,
    name: "flaky",
    pingIntervalMs: 100,
    serverTimeoutMs: 300,
    reconnect: { baseMs: 10, capMs: 20 },
  });
  const watch = watcher.subscribe("room.2", { presenceEvents: true });
  const wv = /** @type {import("tern-client").PresenceView} */ (watch.presence);
  await waitFor(wv, (e) => e.type === "snapshot");
  const sub = member.subscribe("room.2", { presence: "{}" });
  const mv = /** @type {import("tern-client").PresenceView} */ (sub.presence);
  const first = await waitFor(mv, (e) => e.type === "joined");
  await waitFor(wv, (e) => e.type === "join");
  // Stall the broker past the member's server timeout: it drops the connection and
  // reconnects, resubscribing with its member token.
  const resumed = new Promise((ok) => member.on("resumed", ok));
  ternd.signal("SIGSTOP");
  await sleep(600);
  ternd.signal("SIGCONT");
  await within(resumed, 5000, "the member to reconnect");
  const again = await waitFor(mv, (e) => e.type === "joined");
  assert.ok(first.type === "joined" && again.type === "joined");
  assert.equal(again.user, first.user, "the same member after the reconnection");
  await watcher.flush();
  await sleep(200);
  await assert.rejects(
    wv.next(300),
    (e) => e instanceof TernError && e.kind === "Timeout",
    "no leave, no join",
  );
  assert.equal(await watcher.presenceCount("room.2"), 1);
  member.close();
  watcher.close();
});
