// wss://: the WebSocket port over TLS (ternd with --tls-cert/--tls-key; nats-server with a
// tls block in its websocket block), as a page served over https must use. The certificate
// is a self-signed one for 127.0.0.1 made here; the client trusts it through the `ws`
// options, and a client that does not trust it is refused.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";
import { Collector, Server, connectTo, makeCertificate, trustCertificate } from "./harness.js";

/** @type {string} */
let dir;
/** @type {Server} */
let server;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tern-js-tls-"));
  const tls = await makeCertificate(dir);
  await trustCertificate(tls);
  server = await Server.start({ tls });
});

after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

test("the URL is wss://", () => {
  assert.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
});

test("publish, subscribe and request/reply over wss://", async () => {
  const nc = await server.connect();
  const sub = new Collector(nc, "tls.test");
  nc.subscribe("tls.svc", { callback: (_, msg) => msg.respond(`secure ${msg.string()}`) });
  await nc.flush();
  const big = "x".repeat(100_000);
  nc.publish("tls.test", "hello");
  nc.publish("tls.test", big);
  const [a, b] = await sub.first(2);
  assert.equal(a.string(), "hello");
  assert.equal(b.string(), big);
  const reply = await nc.request("tls.svc", "ping", { timeout: 5_000 });
  assert.equal(reply.string(), "secure ping");
});

test("a client that does not trust the certificate is refused", async () => {
  const trusting = globalThis.WebSocket;
  Object.assign(globalThis, { WebSocket }); // the plain one: the system's CAs only
  try {
    await assert.rejects(
      connectTo(server.url, { reconnect: false, timeout: 5_000 }),
      /self-signed certificate/,
    );
  } finally {
    Object.assign(globalThis, { WebSocket: trusting });
  }
});
