// @ts-check
// Credentials and TLS against a real ternd: user and password, an nkey answering the
// broker's CHALLENGE (the seed of 32 zero bytes, a test key), a NATS `.creds` file (a key
// pair made here with Node's ed25519, written as nsc writes it: the broker checks the
// signature, a scripted server checks what HELLO and AUTH carry), permissions refused with
// PermissionViolation, and TLS from the first byte over tls:// and wss:// with a
// self-signed certificate made by openssl.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync, verify } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { ErrorCode, TernError, connect, nkeySigner } from "tern-client";
import { ClientFrameDecoder, encodeServerFrame } from "tern-client/codec";
import { Ternd, within } from "./harness.js";

/** The seed of 32 zero bytes and its public key (as in protocol/tests/binary_vectors.rs). */
const SEED = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ";
const NKEY = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5";

/**
 * NKey encoding written here on its own (not the client's): base32 without padding of the
 * bytes and their CRC16 (XMODEM), little endian.
 * @param {number[]} bytes
 */
function nkeyText(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  const all = [...bytes, crc & 0xff, crc >> 8];
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of all) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    for (; bits >= 5; bits -= 5) out += alphabet[(value >> (bits - 5)) & 31];
  }
  return bits > 0 ? out + alphabet[(value << (5 - bits)) & 31] : out;
}

const PREFIX_SEED = 18 << 3;
const PREFIX_USER = 20 << 3;

/**
 * A user's seed (`SU...`) and public key (`U...`) for 32 secret bytes and their public key.
 * @param {number[]} secret
 * @param {number[]} pub
 */
function userNkey(secret, pub) {
  return {
    seed: nkeyText([PREFIX_SEED | (PREFIX_USER >> 5), (PREFIX_USER & 31) << 3, ...secret]),
    nkey: nkeyText([PREFIX_USER, ...pub]),
  };
}

/** A fresh ed25519 key pair from Node's crypto, as a user nkey. */
function newUser() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = (/** @type {string | undefined} */ b64) => [...Buffer.from(b64 ?? "", "base64url")];
  return {
    ...userNkey(
      raw(privateKey.export({ format: "jwk" }).d),
      raw(publicKey.export({ format: "jwk" }).x),
    ),
    publicKey,
  };
}

/**
 * A `.creds` file as nsc writes it.
 * @param {string} seed
 * @param {string} [jwt]
 */
function credsText(seed, jwt) {
  return [
    ...(jwt === undefined
      ? []
      : ["-----BEGIN NATS USER JWT-----", jwt, "------END NATS USER JWT------", ""]),
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "NKEYs are sensitive and should be treated as secrets.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seed,
    "------END USER NKEY SEED------",
    "",
    "*************************************************************",
    "",
  ].join("\n");
}

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

test("creds: HELLO carries the file's JWT and public key, AUTH the nonce signed with its seed", async () => {
  // This test's encoding agrees with the protocol's vectors.
  assert.deepEqual(userNkey(Array(32).fill(0), []).seed, SEED);
  const user = newUser();
  const jwt = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVQSJ9.c2ln";
  const dir = await mkdtemp(join(tmpdir(), "tern-client-creds-"));
  const file = join(dir, "user.creds");
  await writeFile(file, credsText(user.seed, jwt));
  const nonce = "qKxRFmHLFrMz5Q0AU4vCxw";
  /** @type {import("tern-client/codec").ClientFrame[]} */
  const frames = [];
  // A scripted server: reads the preface and HELLO, sends CHALLENGE, reads AUTH, refuses.
  const server = createServer((socket) => {
    const decoder = new ClientFrameDecoder();
    let preface = 8;
    socket.on("data", (chunk) => {
      const skip = Math.min(preface, chunk.length);
      preface -= skip;
      decoder.push(new Uint8Array(chunk.subarray(skip)));
      for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
        frames.push(f);
        if (f.type === "HELLO") socket.write(encodeServerFrame({ type: "CHALLENGE", nonce }));
        if (f.type === "AUTH") {
          socket.end(
            encodeServerFrame({
              type: "ERROR",
              code: ErrorCode.AuthorizationViolation,
              fatal: true,
              message: "Authorization Violation",
            }),
          );
        }
      }
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  try {
    for (const options of [{ credsFile: file }, { creds: credsText(user.seed, jwt) }]) {
      frames.length = 0;
      await assert.rejects(
        connect({ servers: `tern://127.0.0.1:${port}`, reconnect: false, ...options }),
        (e) => e instanceof TernError && e.code === ErrorCode.AuthorizationViolation,
      );
      const [hello, auth] = frames;
      assert.equal(hello?.type === "HELLO" && hello.nkey, user.nkey);
      assert.equal(hello?.type === "HELLO" && hello.token, jwt);
      assert.ok(auth?.type === "AUTH" && auth.signature !== undefined && auth.token === undefined);
      const signature = Buffer.from(auth.signature ?? "", "base64url");
      assert.ok(
        verify(null, Buffer.from(nonce), user.publicKey, signature),
        "the signature verifies",
      );
    }
    // A token given beside the file goes instead of its JWT.
    frames.length = 0;
    await assert.rejects(
      connect({
        servers: `tern://127.0.0.1:${port}`,
        reconnect: false,
        credsFile: file,
        token: "mine",
      }),
    );
    assert.equal(frames[0]?.type === "HELLO" && frames[0].token, "mine");
  } finally {
    await new Promise((ok) => server.close(() => ok(undefined)));
    await rm(dir, { recursive: true, force: true });
  }
});

test("creds against ternd: the file's key is let in, another is refused, bad files say which", async () => {
  const user = newUser();
  const stranger = newUser();
  const probe = await Ternd.start();
  started.push(probe);
  const config = join(probe.dir, "nkeys.toml");
  await writeFile(config, `[[users]]\nnkey = "${user.nkey}"\n`);
  await probe.stop();
  probe.extra = ["--config", config, "--auth-failures-per-ip", "0"];
  await probe.run();
  const file = join(probe.dir, "user.creds");
  await writeFile(file, credsText(user.seed, "eyJ0.eyJ1.c2ln"));

  const tcp = await connect({ servers: probe.tcpUrl, credsFile: file });
  const ws = await connect({ servers: probe.wsUrl, creds: credsText(user.seed), WebSocket });
  const sub = ws.subscribe("creds.x");
  await sub.ready;
  await tcp.publishAcked("creds.x", "signed");
  assert.equal((await within(sub.next(), 5000, "the message")).string(), "signed");
  tcp.close();
  ws.close();

  const other = join(probe.dir, "stranger.creds");
  await writeFile(other, credsText(stranger.seed));
  await assert.rejects(
    connect({ servers: probe.tcpUrl, credsFile: other }),
    (e) => e instanceof TernError && e.code === ErrorCode.AuthorizationViolation,
  );

  /**
   * @param {Partial<import("tern-client").ConnectOptions>} options
   * @param {RegExp} message
   */
  const refused = (options, message) =>
    assert.rejects(connect({ servers: probe.tcpUrl, ...options }), (e) => {
      assert.ok(e instanceof TernError && e.kind === "Credentials", String(e));
      assert.match(e.message, message);
      assert.ok(!e.message.includes(user.seed.slice(2, 12)), "no part of the seed in the error");
      return true;
    });
  await refused({ credsFile: join(probe.dir, "missing.creds") }, /missing\.creds: cannot read/);
  const noSeed = join(probe.dir, "jwt-only.creds");
  await writeFile(noSeed, "-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n");
  await refused({ credsFile: noSeed }, /jwt-only\.creds: no USER NKEY SEED block/);
  const flipped =
    user.seed.slice(0, 10) + (user.seed[10] === "A" ? "B" : "A") + user.seed.slice(11);
  await refused({ creds: credsText(flipped) }, /creds: bad checksum/);
  await assert.rejects(
    connect({ servers: probe.tcpUrl, credsFile: file, nkeySeed: SEED }),
    (e) => e instanceof TernError && e.kind === "InvalidOption",
  );
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
