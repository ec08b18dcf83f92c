// @ts-check
// The shared test vectors (protocol/tests/vectors/binary.txt) against this codec, as
// protocol/tests/binary_vectors.rs checks them against the reference: every preface and
// frame decodes and encodes back to exactly its bytes, and every `*-error.*` vector is
// refused with the error its meaning names.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  ClientFrameDecoder,
  CodecError,
  ServerFrameDecoder,
  decodePreface,
  encodeClientFrame,
  encodePreface,
  encodeServerFrame,
} from "tern-client/codec";

const VECTORS = new URL("../../../protocol/tests/vectors/binary.txt", import.meta.url);

/** @returns {{ name: string, bytes: Uint8Array, meaning: string }[]} */
function vectors() {
  return readFileSync(VECTORS, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "" && !line.startsWith("#"))
    .map((line) => {
      const [name = "", hex = "", ...meaning] = line.split(" | ");
      return {
        name: name.trim(),
        bytes: Uint8Array.from(Buffer.from(hex.replace(/\s+/g, ""), "hex")),
        meaning: meaning.join(" | "),
      };
    });
}

/** @param {Uint8Array} b */
const hex = (b) => Buffer.from(b).toString("hex");

/**
 * Decodes one whole frame (and checks nothing is left over).
 * @param {Uint8Array} bytes
 * @param {"client" | "server"} side
 */
function decodeOne(bytes, side) {
  const d = side === "client" ? new ClientFrameDecoder() : new ServerFrameDecoder();
  d.push(bytes);
  const frame = d.next();
  assert.ok(frame, "a whole frame");
  assert.equal(d.next(), undefined);
  return frame;
}

/** What some vectors mean, as values: the decoder must give exactly these. */
/** @type {Record<string, object>} */
const MEANINGS = {
  "client.hello-no-responders": {
    type: "HELLO",
    name: "demo",
    version: "",
    echo: true,
    noResponders: true,
  },
  "client.publish-full": {
    type: "PUBLISH",
    priority: 7,
    ackId: 42n,
    subject: "orders.new",
    reply: "_INBOX.a1",
    messageId: "m-1",
    coalescingKey: "cursor",
    headers: new TextEncoder().encode("NATS/1.0\r\nK: v\r\n\r\n"),
    payload: new TextEncoder().encode("{}"),
  },
  "client.subscribe-resume": {
    type: "SUBSCRIBE",
    sid: 3,
    maxQueueMessages: 0,
    maxQueueBytes: 0,
    subject: "chat.room1",
    lossless: false,
    start: { mode: "resume", token: { epoch: 0x0123456789abcdefn, lastSequences: [10n, 0n] } },
    presenceEvents: false,
  },
  "server.welcome": {
    type: "WELCOME",
    version: 1,
    shardCount: 4,
    maxPayload: 1048576,
    maxFrame: 1114112,
    pingIntervalMs: 30000,
    clientId: 7n,
    logEpoch: 0x0123456789abcdefn,
    serverId: "TERN0001",
  },
  "server.message": {
    type: "MESSAGE",
    sid: 1,
    priority: 3,
    shard: 2,
    sequence: 17n,
    timestamp: 1700000000000000000n,
    subject: "chat.room1",
    payload: new TextEncoder().encode("hi"),
    replayed: false,
  },
  "server.drop-notice": {
    type: "DROP_NOTICE",
    sid: 1,
    dropped: 5n,
    ranges: [
      { shard: 0, first: 10n, last: 12n },
      { shard: 3, first: 7n, last: 8n },
    ],
  },
  "server.subscribed": { type: "SUBSCRIBED", sid: 4, epoch: 7n, lastSequences: [10n, 0n, 3n] },
  "server.publish-ack-duplicate": {
    type: "PUBLISH_ACK",
    ackId: 43n,
    result: { kind: "stored", shard: 1, sequence: 99n, duplicate: true },
  },
  "server.presence-joined": {
    type: "PRESENCE",
    id: 6,
    query: false,
    more: false,
    count: 1,
    body: { kind: "joined", user: "demo#7", memberToken: new TextEncoder().encode("tok") },
  },
};

/**
 * The error a `*-error.*` vector's meaning names.
 * @param {string} meaning
 * @returns {{ kind: string, code?: number, sid?: number, ackId?: bigint }}
 */
function expectedError(meaning) {
  const refused = /refused \w+ \(0x([0-9a-f]{4})\)/.exec(meaning);
  if (refused) {
    const sid = /for sid (\d+)/.exec(meaning);
    const ack = /with ack id (\d+)/.exec(meaning);
    return {
      kind: "Refused",
      code: parseInt(refused[1] ?? "", 16),
      ...(sid ? { sid: Number(sid[1]) } : {}),
      ...(ack ? { ackId: BigInt(ack[1] ?? "") } : {}),
    };
  }
  const kinds = [
    "BadMagic",
    "UnknownFrameType",
    "FrameTooShort",
    "FrameTooLarge",
    "ReservedFlags",
    "Truncated",
    "TrailingBytes",
    "InvalidValue",
  ];
  const kind = kinds.find((k) => meaning.includes(k));
  assert.ok(kind, `an error named in "${meaning}"`);
  return { kind };
}

const all = vectors();

test("the vector file has every kind of vector", () => {
  const prefixes = new Set(all.map((v) => v.name.split(".")[0]));
  assert.deepEqual(
    [...prefixes].sort(),
    ["client", "client-error", "preface", "preface-error", "server"].sort(),
  );
  assert.ok(all.length >= 60, `${all.length} vectors`);
});

for (const v of all) {
  test(`vector ${v.name}`, () => {
    const kind = v.name.split(".")[0];
    if (kind === "preface") {
      const p = decodePreface(v.bytes);
      assert.ok(p);
      assert.equal(hex(encodePreface(p)), hex(v.bytes));
    } else if (kind === "client" || kind === "server") {
      const frame = decodeOne(v.bytes, kind);
      const again =
        kind === "client"
          ? encodeClientFrame(/** @type {import("tern-client/codec").ClientFrame} */ (frame))
          : encodeServerFrame(/** @type {import("tern-client/codec").ServerFrame} */ (frame));
      assert.equal(hex(again), hex(v.bytes));
      const meaning = MEANINGS[v.name];
      if (meaning) {
        assert.deepEqual(frame, meaning);
      }
    } else {
      const want = expectedError(v.meaning);
      let error;
      try {
        if (kind === "preface-error") {
          decodePreface(v.bytes);
        } else {
          decodeOne(v.bytes, "client");
        }
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof CodecError, `${v.name} must be refused (${String(error)})`);
      assert.equal(error.kind, want.kind, error.message);
      if (want.code !== undefined) assert.equal(error.code, want.code);
      assert.equal(error.fatal, want.kind !== "Refused");
      assert.equal(error.sid, want.sid);
      assert.equal(error.ackId, want.ackId);
    }
  });
}

test("the server's frame decoder refuses client-only types", () => {
  const d = new ServerFrameDecoder();
  d.push(Uint8Array.from([0, 0, 0, 2, 0x02, 0]));
  assert.throws(
    () => d.next(),
    (e) => e instanceof CodecError && e.kind === "UnknownFrameType",
  );
});
