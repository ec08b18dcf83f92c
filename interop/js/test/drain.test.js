// Draining through nats.ws: a subscription, and a whole connection, finish what is in flight
// before they close.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Collector, Server, within } from "./harness.js";

/** @type {Server} */
let server;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await server?.close();
});

test("a drained subscription gets every message published before the drain, then ends", async () => {
  const nc = await server.connect();
  const publisher = await server.connect();
  /** @type {string[]} */
  const got = [];
  const sub = nc.subscribe("drain.sub", {
    callback: (_, msg) => {
      got.push(msg.string());
    },
  });
  await nc.flush();
  const count = 2_000;
  for (let i = 0; i < count; i++) {
    publisher.publish("drain.sub", String(i));
  }
  await publisher.flush(); // all of them are at the server
  await within(sub.drain(), 5_000, "the subscription to drain");
  assert.equal(sub.isClosed(), true);
  assert.deepEqual(
    got,
    Array.from({ length: count }, (_, i) => String(i)),
  );
  // Later messages go nowhere: the server has the UNSUB.
  publisher.publish("drain.sub", "late");
  await publisher.flush();
  await nc.flush();
  assert.equal(got.length, count);
  await nc.close();
  await publisher.close();
});

test("a drained connection sends what it published and delivers what it was sent, then closes", async () => {
  const watcher = await server.connect();
  const outbound = new Collector(watcher, "drain.out");
  await watcher.flush();

  const nc = await server.connect();
  /** @type {string[]} */
  const inbound = [];
  nc.subscribe("drain.in", {
    callback: (_, msg) => {
      inbound.push(msg.string());
    },
  });
  await nc.flush();
  const count = 1_000;
  for (let i = 0; i < count; i++) {
    watcher.publish("drain.in", String(i));
  }
  await watcher.flush();
  for (let i = 0; i < count; i++) {
    nc.publish("drain.out", String(i));
  }
  const closed = nc.closed();
  await within(nc.drain(), 5_000, "the connection to drain");
  assert.equal(await within(closed, 5_000, "the connection to close"), undefined);
  assert.equal(nc.isClosed(), true);
  assert.equal(inbound.length, count, "every message sent to it was delivered");
  const sent = await outbound.first(count);
  assert.deepEqual(
    sent.map((m) => m.string()),
    Array.from({ length: count }, (_, i) => String(i)),
  );
  await watcher.close();
});
