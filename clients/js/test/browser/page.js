// @ts-check
// Runs in headless Chromium: loads the built ESM package as a browser would, connects over
// the browser's own WebSocket to ws://.../tern, subscribes, publishes (fire-and-forget and
// acknowledged), makes a request that Node answers, and reports in `window.result`.

import { connect } from "/dist/index.js";

const server = new URL(location.href).searchParams.get("server") ?? "";

async function run() {
  const client = await connect({ servers: server, name: "chromium" });
  const sub = client.subscribe("browser.>");
  await sub.ready;
  client.publish("browser.plain", "from the page", { headers: { Page: "yes" }, priority: 3 });
  const ack = await client.publishAcked("browser.acked", new Uint8Array([1, 2, 3]));
  const first = await sub.next(5000);
  const second = await sub.next(5000);
  const reply = await client.request("svc.upper", "shout", { timeoutMs: 5000 });
  const fromNode = await sub.next(5000);
  const result = {
    info: { shards: client.info?.shardCount ?? 0, server: client.info?.server ?? "" },
    received: [first, second, fromNode].map((m) => ({
      subject: m.subject,
      text: m.string(),
      header: m.headers?.get("Page") ?? null,
      priority: m.priority,
      sequence: String(m.sequence),
    })),
    ack: { shard: ack.shard, sequence: String(ack.sequence) },
    reply: reply.string(),
    token: String(sub.resumeToken()?.lastSequences.length ?? -1),
  };
  await client.drain(2000);
  return result;
}

run().then(
  (r) => Object.assign(window, { result: { ok: r } }),
  (e) => Object.assign(window, { result: { error: String(e?.stack ?? e) } }),
);
