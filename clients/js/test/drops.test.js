// @ts-check
// A subscriber that stops reading (its process is stopped) with a small broker-side queue:
// the broker drops, and tells it with a DROP_NOTICE (count and sequence ranges) ahead of
// its next delivery, which the client reports as a `dropNotice` event.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";
import { connect } from "tern-client";
import { PACKAGE_DIR, Ternd, sleep, until } from "./harness.js";

/** @type {Ternd | undefined} */
let ternd;
after(async () => {
  await ternd?.close();
});

test("a stopped subscriber's queue overflows: dropNotice with count and ranges", async () => {
  ternd = await Ternd.start(["--write-buffer", "64KiB"]);
  const child = spawn(
    process.execPath,
    [join(PACKAGE_DIR, "test/fixtures/slow-subscriber.js"), ternd.tcpUrl, "drops.x"],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  let out = "";
  child.stdout.on("data", (b) => (out += String(b)));
  try {
    await until(() => out.includes("ready\n"), 5000, "the subscriber to be ready");
    child.kill("SIGSTOP");
    const pub = await connect({ servers: ternd.tcpUrl });
    const payload = new Uint8Array(4096);
    for (let i = 0; i < 2000; i++) {
      pub.publish("drops.x", payload);
      if (i % 200 === 0) await pub.flush();
    }
    await pub.flush(10_000);
    await sleep(100);
    child.kill("SIGCONT");
    child.stdin.write("go\n");
    await sleep(200);
    pub.publish("drops.x", "last");
    await pub.flush();
    await until(() => out.split("\n").length > 2, 15_000, "the subscriber's report");
    const report = JSON.parse(out.split("\n")[1] ?? "");
    assert.ok(report.drops.length >= 1, JSON.stringify(report));
    const dropped = BigInt(report.serverDropped);
    assert.ok(dropped > 0n);
    assert.equal(BigInt(report.received) + dropped, 2001n, JSON.stringify(report));
    assert.match(report.drops[0].ranges[0], /^\d+:\d+-\d+$/);
    pub.close();
  } finally {
    child.kill("SIGCONT");
    child.kill();
  }
});
