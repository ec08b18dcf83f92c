// @ts-check
// Credentials and TLS against a real ternd: user and password, an nkey answering the
// broker's CHALLENGE (the seed of 32 zero bytes, a test key), permissions refused with
// PermissionViolation, and TLS from the first byte over tls:// and wss:// with a
// self-signed certificate made by openssl.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { ErrorCode, TernError, connect, nkeySigner } from "tern-client";
import { Ternd } from "./harness.js";

/** The seed of 32 zero bytes and its public key (as in protocol/tests/binary_vectors.rs). */
const SEED = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
const NKEY = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";

/** @type {Ternd[]} */
const started = [];
after(async () => {
  await Promise.all(started.map((t) => t.close()));
});

test("nkey: the seed's public key and its signature of the vectors' nonce", async () => {
  const signer = await nkeySigner(SEED);
  assert.equal(signer.publicKey, NKEY);
  assert.equal(
    await signer.sign("qKxRFmHLFrMz5Q0AU4vCxw"),
    "rtA2tbpEUnOV7v64VlU9H_LwiSneOUhql0wWVCpsL4ll6eEaCKBFD6Y2cVUs6ICFrkxXr2ccPWTEJQs1Xy2WDA",
  );
  await assert.rejects(
    nkeySigner("SUAAAA"),
    (e) => e instanceof TernError && e.kind === "Credentials" && !e.message.includes("SUAAAA"),
  );
});

test("users: password, nkey, permissions", async () => {
  const probe = await Ternd.start();
  started.push(probe);
  const config = join(probe.dir, "users.toml");
  await writeFile(
    config,
    [
      "[[users]]",
      'user = "alice"',
      'password = "pw"',
      "[[users]]",
      `nkey = "${NKEY}"`,
      "[[users]]",
      'user = "reader"',
      'password = "r"',
      "[users.permissions]",
      'publish = { deny = [">"] }',
      'subscribe = ["public.>"]',
      "",
    ].join("\n"),
  );
  await probe.stop();
  probe.extra = ["--config", config];
  await probe.run();

  const alice = await connect({ servers: probe.tcpUrl, user: "alice", pass: "pw" });
  await alice.publishAcked("any.thing", "x");
  alice.close();
  await assert.rejects(
    connect({ servers: probe.tcpUrl, user: "alice", pass: "nope" }),
    (e) =>
      e instanceof TernError && e.kind === "Server" && e.code === ErrorCode.AuthorizationViolation,
  );

  for (const servers of [probe.tcpUrl, probe.wsUrl]) {
    const n = await connect({ servers, nkeySeed: SEED, WebSocket });
    await n.publishAcked("nkey.ok", "signed");
    n.close();
  }

  const reader = await connect({ servers: probe.tcpUrl, user: "reader", pass: "r" });
  await assert.rejects(
    reader.publishAcked("public.x", "no"),
    (e) =>
      e instanceof TernError && e.kind === "Refused" && e.code === ErrorCode.PermissionViolation,
  );
  const denied = reader.subscribe("private.x");
  await assert.rejects(
    denied.ready,
    (e) => e instanceof TernError && e.code === ErrorCode.PermissionViolation,
  );
  const allowed = reader.subscribe("public.>");
  await allowed.ready;
  reader.close();
});

test("TLS over tls:// and wss://", async (t) => {
  const plain = await Ternd.start();
  started.push(plain);
  const cert = join(plain.dir, "cert.pem");
  const key = join(plain.dir, "key.pem");
  try {
    await new Promise((ok, fail) =>
      execFile(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-addext",
          "subjectAltName=IP:127.0.0.1",
          "-keyout",
          key,
          "-out",
          cert,
        ],
        (error, _out, stderr) => (error ? fail(new Error(stderr)) : ok(undefined)),
      ),
    );
  } catch (e) {
    t.skip(`no openssl: ${String(e)}`);
    return;
  }
  await plain.stop();
  plain.extra = ["--tls-cert", cert, "--tls-key", key];
  await plain.run();
  const ca = await readFile(cert, "utf8");
  const tcp = await connect({ servers: `tls://127.0.0.1:${plain.binaryPort}`, tls: { ca } });
  const wss = await connect({
    servers: `wss://127.0.0.1:${plain.wsPort}/tern`,
    tls: { ca },
    WebSocket,
  });
  const sub = wss.subscribe("tls.x");
  await sub.ready;
  await tcp.publishAcked("tls.x", "secret");
  assert.equal((await sub.next(2000)).string(), "secret");
  await assert.rejects(
    connect({ servers: `tls://127.0.0.1:${plain.binaryPort}`, connectTimeoutMs: 2000 }),
    (e) => e instanceof TernError && e.kind === "Connect",
  );
  tcp.close();
  wss.close();
});

test("the backoff: full jitter within min(cap, base·2ⁿ)", async () => {
  const { backoffDelay } = await import("tern-client");
  assert.equal(
    backoffDelay({ baseMs: 100, capMs: 5000 }, 0, () => 0.999),
    99,
  );
  assert.equal(
    backoffDelay({ baseMs: 100, capMs: 5000 }, 3, () => 0.5),
    400,
  );
  assert.equal(
    backoffDelay({ baseMs: 100, capMs: 5000 }, 20, () => 0.999),
    4995,
  );
  assert.equal(
    backoffDelay({}, 1000, () => 0),
    0,
  );
});
