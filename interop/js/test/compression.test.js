// permessage-deflate: with compression on, the server accepts the deflate offer of `ws` (the
// WebSocket nats.ws runs on in Node; Chromium's is in browser.test.js) and NATS traffic
// goes through compressed both ways: large and small, compressible and random payloads.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { headers } from "nats.ws";
import { WebSocket } from "ws";
import { Collector, Server, within } from "./harness.js";

/** @type {Server} */
let server;
/** @type {import("nats.ws").NatsConnection} */
let nc;

before(async () => {
  server = await Server.start({ compression: true });
  nc = await server.connect();
});

after(async () => {
  await server?.close();
});

test("the server accepts the client's permessage-deflate offer and sends INFO", async () => {
  const socket = new WebSocket(server.url); // ws offers permessage-deflate by default
  try {
    const first = await within(
      new Promise((ok, fail) => {
        socket.once("message", (data) => ok(String(data)));
        socket.once("error", fail);
      }),
      5_000,
      "the server's first message",
    );
    assert.match(socket.extensions, /permessage-deflate/);
    assert.match(first, /^INFO \{/);
  } finally {
    socket.close();
  }
});

test("compressible, random and tiny payloads round-trip", async () => {
  const sub = new Collector(nc, "deflate.test");
  await nc.flush();
  const text = "the quick brown fox jumps over the lazy dog. ".repeat(5_000); // ~225 KB
  const random = new Uint8Array(randomBytes(100_000));
  const tiny = "hi";
  nc.publish("deflate.test", text);
  nc.publish("deflate.test", random);
  nc.publish("deflate.test", tiny);
  const [a, b, c] = await sub.first(3);
  assert.equal(a.string(), text);
  assert.deepEqual(b.data, random);
  assert.equal(c.string(), tiny);
});

test("request/reply with headers over a compressed connection", async () => {
  const service = await server.connect();
  service.subscribe("deflate.echo", {
    callback: (_, msg) => msg.respond(msg.data, { headers: msg.headers }),
  });
  await service.flush();
  const h = headers();
  h.set("Kind", "compressed");
  const body = "echo ".repeat(10_000);
  const reply = await nc.request("deflate.echo", body, { timeout: 5_000, headers: h });
  assert.equal(reply.string(), body);
  assert.equal(reply.headers?.get("Kind"), "compressed");
});
