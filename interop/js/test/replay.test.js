// ternd's catch-up for text clients, `$TERN.REPLAY` (docs/protocol-text.md), from nats.ws over
// WebSocket: what the web chat example relies on to show what a tab missed while offline.
// nats-server has no such thing, so under TERN_JS_SERVER=nats-server these are skipped.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createInbox, headers } from "nats.ws";
import { IS_TERND, Server, sleep, within } from "./harness.js";

/**
 * What one `$TERN.REPLAY` request brought back: its records, in order, and its end markers.
 * @typedef {{ records: import("nats.ws").Msg[], markers: import("nats.ws").Msg[] }} Replay
 */

/**
 * Sends a `$TERN.REPLAY` request and collects the answer up to the last shard's end marker
 * (each marker says how many to expect in `Tern-Replay-Shards`), or up to a refusal.
 * @param {import("nats.ws").NatsConnection} nc
 * @param {Record<string, unknown> | string} request the JSON body, or what to make it of
 * @returns {Promise<Replay>}
 */
async function replay(nc, request) {
  const inbox = createInbox();
  /** @type {Replay} */
  const got = { records: [], markers: [] };
  const sub = nc.subscribe(inbox);
  await nc.flush(); // subscribed before the request, as the spec says
  const body = typeof request === "string" ? request : JSON.stringify(request);
  nc.publish("$TERN.REPLAY", body, { reply: inbox });
  const read = async () => {
    for await (const msg of sub) {
      const h = msg.headers;
      if (h?.has("Tern-Replay-Done")) {
        got.markers.push(msg);
        if (got.markers.length === Number(h.get("Tern-Replay-Shards"))) {
          break;
        }
      } else if (h?.hasError) {
        got.markers.push(msg); // a refusal: the only message
        break;
      } else {
        got.records.push(msg);
      }
    }
    return got;
  };
  try {
    return await within(read(), 5_000, `the answer to $TERN.REPLAY ${body}`);
  } finally {
    sub.unsubscribe();
  }
}

/** @param {Replay} r */
function replayedCount(r) {
  return r.markers.reduce((n, m) => n + Number(m.headers?.get("Tern-Replayed")), 0);
}

describe("$TERN.REPLAY over WebSocket", { skip: !IS_TERND && "ternd only" }, () => {
  /** @type {Server} */
  let server;
  /** @type {import("nats.ws").NatsConnection} */
  let nc;

  before(async () => {
    server = await Server.start();
    nc = await server.connect();
    for (let i = 1; i <= 5; i++) {
      const h = headers();
      h.set("Chat-From", i % 2 ? "alice" : "bob");
      nc.publish("room.one", `one ${i}`, { headers: h });
    }
    nc.publish("room.two", "two 1");
    nc.publish("room.two", "two 2");
    await nc.flush();
  });

  after(async () => {
    await server?.close();
  });

  test("the last N records of a subject, oldest first, with their own headers", async () => {
    const r = await replay(nc, { subject: "room.one", last: 3 });
    assert.deepEqual(
      r.records.map((m) => m.string()),
      ["one 3", "one 4", "one 5"],
    );
    for (const m of r.records) {
      assert.equal(m.headers?.get("Tern-Subject"), "room.one");
      assert.match(m.headers?.get("Tern-Seq") ?? "", /^\d+$/);
      assert.match(m.headers?.get("Tern-Time") ?? "", /^\d+$/);
    }
    assert.deepEqual(
      r.records.map((m) => m.headers?.get("Chat-From")),
      ["alice", "bob", "alice"],
    );
    assert.equal(replayedCount(r), 3);
  });

  test("a wildcard filter with no start replays every record held", async () => {
    const r = await replay(nc, { subject: "room.*" });
    assert.deepEqual(
      r.records.map((m) => m.string()),
      ["one 1", "one 2", "one 3", "one 4", "one 5", "two 1", "two 2"],
    );
    assert.equal(replayedCount(r), 7);
  });

  test("since_ns replays from a time on, given exactly (nanoseconds are past 2^53)", async () => {
    nc.publish("room.three", "early");
    await nc.flush();
    await sleep(50);
    // The broker runs on this machine, on the same clock.
    const cut = BigInt(Date.now()) * 1_000_000n;
    await sleep(50);
    nc.publish("room.three", "late");
    await nc.flush();
    // JSON.stringify cannot write a BigInt, and a Number would round the time.
    const request = `{"subject":"room.three","since_ns":${cut}}`;
    const r = await replay(nc, request);
    assert.deepEqual(
      r.records.map((m) => m.string()),
      ["late"],
    );
    // A record's own Tern-Time as since_ns includes that record.
    const late = r.records[0].headers?.get("Tern-Time");
    const again = await replay(nc, `{"subject":"room.three","since_ns":${late}}`);
    assert.deepEqual(
      again.records.map((m) => m.string()),
      ["late"],
    );
  });

  test("a bad request gets a 400 status with the reason", async () => {
    const r = await replay(nc, { subject: "room.one", bogus: 1 });
    assert.equal(r.records.length, 0);
    assert.equal(r.markers.length, 1);
    assert.equal(r.markers[0].headers?.code, 400);
    assert.ok((r.markers[0].headers?.get("Tern-Error") ?? "").length > 0);
  });

  test("what was stored before a restart is replayed after it", async () => {
    await server.stop();
    await server.run();
    const fresh = await server.connect();
    const r = await replay(fresh, { subject: "room.two", last: 10 });
    assert.deepEqual(
      r.records.map((m) => m.string()),
      ["two 1", "two 2"],
    );
  });
});
