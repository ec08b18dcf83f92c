// Reconnecting through nats.ws: the server goes away (killed, or stopped gracefully) and
// comes back on the same port; the client reconnects by itself, its subscriptions are
// restored and traffic flows again both ways.
//
// nats.ws (unlike the Go client) keeps nothing published while it is disconnected: each
// dial starts with an empty outbound buffer. So these tests publish only while connected,
// and the web chat example does not send while offline.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Events } from "nats.ws";
import { Collector, Server, StatusLog } from "./harness.js";

/** @type {Server} */
let server;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await server?.close();
});

for (const signal of /** @type {const} */ (["SIGKILL", "SIGTERM"])) {
  test(`after a ${signal} and a restart on the same port, the client reconnects and traffic flows`, async () => {
    const nc = await server.connect({
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
      reconnectJitter: 0,
    });
    const status = new StatusLog(nc);
    const mine = new Collector(nc, "rc.to-client");
    await nc.flush();
    nc.publish("rc.to-client", "before");
    await mine.first(1);

    await server.stop(signal);
    await status.seen(Events.Disconnect);
    await server.run();
    await status.seen(Events.Reconnect);
    await nc.flush();

    // To the reconnected client, from a fresh connection.
    const other = await server.connect();
    const fromClient = new Collector(other, "rc.from-client");
    await other.flush();
    other.publish("rc.to-client", "after");
    await mine.first(2);
    assert.deepEqual(mine.texts(), ["before", "after"]);

    // From the reconnected client.
    nc.publish("rc.from-client", "hello again");
    const [msg] = await fromClient.first(1);
    assert.equal(msg.string(), "hello again");

    await other.close();
    await nc.close();
  });
}

test("lame duck mode (SIGUSR2) is announced to the client, which keeps working meanwhile", async () => {
  const ldm = await Server.start();
  try {
    const nc = await ldm.connect();
    const status = new StatusLog(nc);
    const sub = new Collector(nc, "ldm.test");
    await nc.flush();
    ldm.signal("SIGUSR2");
    await status.seen(Events.LDM);
    nc.publish("ldm.test", "still here");
    const [msg] = await sub.first(1);
    assert.equal(msg.string(), "still here");
  } finally {
    // Both servers are shutting down by themselves now; nats-server would take its lame
    // duck duration to exit on SIGTERM too.
    await ldm.stop("SIGKILL");
    await ldm.close();
  }
});
