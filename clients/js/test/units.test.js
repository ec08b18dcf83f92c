// @ts-check
// The client's pieces on their own: the resume tracker (as the Rust client's tests check
// it), header blocks, the presence view's bounded queue, `.creds` parsing, and the address
// parser.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  MsgHeaders,
  PresenceView,
  ResumeTracker,
  TernError,
  connect,
  parseCreds,
} from "tern-client";

test("resume tracker: a start covers the shards nothing came from and never lowers a sequence", () => {
  const t = new ResumeTracker();
  assert.equal(t.token(), undefined);
  t.observe(7n, 0, 12n);
  t.startAt(7n, [10n, 40n, 0n]);
  assert.deepEqual(t.token(), { epoch: 7n, lastSequences: [12n, 40n] });
  t.startAt(8n, [3n, 0n]);
  assert.deepEqual(t.token(), { epoch: 8n, lastSequences: [3n] });
  t.observe(8n, 2, 5n);
  t.observe(8n, 2, 4n);
  assert.deepEqual(t.token(), { epoch: 8n, lastSequences: [3n, 0n, 5n] });
  // A known epoch with nothing seen still resumes (from the start), unlike a live start.
  t.reset(9n);
  assert.deepEqual(t.token(), { epoch: 9n, lastSequences: [] });
  const from = new ResumeTracker({ epoch: 4n, lastSequences: [0n, 8n, 0n] });
  assert.deepEqual(from.token(), { epoch: 4n, lastSequences: [0n, 8n] });
});

test("headers: built in order, read case-insensitively, status lines", () => {
  const h = new MsgHeaders({ A: "1", B: ["2", "3"] });
  h.append("a", "4");
  assert.equal(
    new TextDecoder().decode(h.encode()),
    "NATS/1.0\r\nA: 1\r\nB: 2\r\nB: 3\r\na: 4\r\n\r\n",
  );
  assert.deepEqual(h.getAll("A"), ["1", "4"]);
  const r = MsgHeaders.decode(
    new TextEncoder().encode("NATS/1.0 503 No Responders\r\nX: y\r\n\r\n"),
  );
  assert.equal(r.status, 503);
  assert.equal(r.description, "No Responders");
  assert.equal(r.get("x"), "y");
  assert.throws(() => h.append("bad name", "v"), TypeError);
  assert.throws(() => h.append("N", "line\r\nbreak"), TypeError);
});

test("presence view: a full queue is replaced by one snapshot of the view", async () => {
  const v = new PresenceView(3);
  /** @param {string} user */
  const member = (user) => ({ user, sinceMs: 1n, connections: 1, info: new Uint8Array(0) });
  v._apply({ type: "snapshot", members: [member("a")], count: 1 });
  v._apply({ type: "joined", user: "a", count: 1 });
  v._apply({ type: "join", member: member("b"), count: 2 });
  v._apply({ type: "join", member: member("c"), count: 3 }); // full: superseded
  assert.equal(v.superseded, 2);
  assert.deepEqual(
    v.members()?.map((m) => m.user),
    ["a", "b", "c"],
  );
  const first = await v.next(100);
  assert.equal(first.type, "joined");
  const second = await v.next(100);
  assert.ok(second.type === "snapshot" && second.count === 3 && second.members.length === 3);
  v._apply({ type: "leave", user: "b", count: 2 });
  assert.deepEqual(
    v.members()?.map((m) => m.user),
    ["a", "c"],
  );
  await assert.rejects(
    (async () => {
      await v.next(100);
      await v.next(20);
    })(),
    (e) => e instanceof TernError && e.kind === "Timeout",
  );
});

test(".creds: the seed and JWT blocks, with CRLF and comments; no seed is an error", () => {
  const seed = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
  const text = [
    "-----BEGIN NATS USER JWT-----",
    "eyJ0.eyJ1.c2ln",
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "",
    "-----BEGIN USER NKEY SEED-----",
    `  ${seed}  `,
    "------END USER NKEY SEED------",
    "",
  ];
  assert.deepEqual(parseCreds(text.join("\r\n")), { jwt: "eyJ0.eyJ1.c2ln", seed });
  assert.deepEqual(parseCreds(text.slice(4).join("\n")), { jwt: undefined, seed });
  for (const bad of [text.slice(0, 3).join("\n"), text.join("\n").replace(seed, "")]) {
    assert.throws(
      () => parseCreds(bad, "user.creds"),
      (e) =>
        e instanceof TernError &&
        e.kind === "Credentials" &&
        e.message === "user.creds: no USER NKEY SEED block",
    );
  }
});

test("addresses: bad ones are refused before any connection", async () => {
  for (const servers of ["http://x:1", "tern://:1", "tern://h:99999", ""]) {
    await assert.rejects(
      connect({ servers }),
      (e) => e instanceof TernError && e.kind === "InvalidOption",
      servers,
    );
  }
  await assert.rejects(
    connect({ servers: [] }),
    (e) => e instanceof TernError && e.kind === "InvalidOption",
  );
});
