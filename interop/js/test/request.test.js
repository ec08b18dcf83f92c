// Request/reply through nats.ws: muxed and per-request inboxes, headers both ways, many in
// flight, no responders, timeouts.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ErrorCode, headers } from "nats.ws";
import { Server } from "./harness.js";

/** @type {Server} */
let server;
/** The requester. */
/** @type {import("nats.ws").NatsConnection} */
let nc;
/** The service, on a connection of its own. */
/** @type {import("nats.ws").NatsConnection} */
let service;

before(async () => {
  server = await Server.start();
  nc = await server.connect();
  service = await server.connect();
  service.subscribe("svc.upper", {
    callback: (_, msg) => {
      const h = headers();
      h.set("Served-By", "upper");
      const asked = msg.headers?.get("Request-Id");
      if (asked) {
        h.set("Request-Id", asked);
      }
      msg.respond(msg.string().toUpperCase(), { headers: h });
    },
  });
  // Subscribed but never answers, for the timeout test.
  service.subscribe("svc.silent", { callback: () => {} });
  await service.flush();
});

after(async () => {
  await nc?.close();
  await service?.close();
  await server?.close();
});

test("a request gets its reply, with the responder's headers", async () => {
  const reply = await nc.request("svc.upper", "hello", { timeout: 5_000 });
  assert.equal(reply.string(), "HELLO");
  assert.equal(reply.headers?.get("Served-By"), "upper");
});

test("request headers reach the responder", async () => {
  const h = headers();
  h.set("Request-Id", "r-42");
  const reply = await nc.request("svc.upper", "with id", { timeout: 5_000, headers: h });
  assert.equal(reply.headers?.get("Request-Id"), "r-42");
});

test("a request on its own inbox (noMux) gets its reply", async () => {
  const reply = await nc.request("svc.upper", "own inbox", { timeout: 5_000, noMux: true });
  assert.equal(reply.string(), "OWN INBOX");
});

test("200 requests in flight at once each get their own reply", async () => {
  const asks = Array.from({ length: 200 }, (_, i) => `request ${i}`);
  const replies = await Promise.all(
    asks.map((ask) => nc.request("svc.upper", ask, { timeout: 10_000 })),
  );
  assert.deepEqual(
    replies.map((r) => r.string()),
    asks.map((a) => a.toUpperCase()),
  );
});

test("a request nobody subscribes to fails at once with no responders (503)", async () => {
  const started = Date.now();
  await assert.rejects(nc.request("nobody.home", "hello?", { timeout: 30_000 }), (error) => {
    assert.equal(/** @type {{ code?: string }} */ (error).code, ErrorCode.NoResponders);
    return true;
  });
  // The 503 comes from the server; a timeout would take the full 30 s.
  assert.ok(Date.now() - started < 10_000);
});

test("a request whose responder stays silent times out", async () => {
  await assert.rejects(nc.request("svc.silent", "anyone?", { timeout: 300 }), (error) => {
    assert.equal(/** @type {{ code?: string }} */ (error).code, ErrorCode.Timeout);
    return true;
  });
});

test("a request to a queue group is answered once", async () => {
  let answered = 0;
  const subs = [1, 2, 3].map((n) =>
    service.subscribe("svc.q", {
      queue: "q",
      callback: (_, msg) => {
        answered++;
        msg.respond(`member ${n}`);
      },
    }),
  );
  await service.flush();
  for (let i = 0; i < 20; i++) {
    const reply = await nc.request("svc.q", "", { timeout: 5_000 });
    assert.match(reply.string(), /^member [123]$/);
  }
  await service.flush();
  assert.equal(answered, 20);
  for (const sub of subs) {
    sub.unsubscribe();
  }
});
