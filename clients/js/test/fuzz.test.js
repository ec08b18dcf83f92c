// @ts-check
// Property tests of the decoders: arbitrary and mutated bytes never make them throw anything
// but CodecError, every generated frame encodes and decodes back to itself, and a stream
// split anywhere decodes to the same frames as when it arrives whole.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import {
  ClientFrameDecoder,
  CodecError,
  ServerFrameDecoder,
  encodeClientFrame,
  encodeServerFrame,
} from "tern-client/codec";

/** @typedef {import("tern-client/codec").ServerFrame} ServerFrame */
/** @typedef {import("tern-client/codec").ClientFrame} ClientFrame */

const RUNS = 400;

const VECTOR_FRAMES = readFileSync(
  new URL("../../../protocol/tests/vectors/binary.txt", import.meta.url),
  "utf8",
)
  .split("\n")
  .filter((l) => /^(client|server)\./.test(l))
  .map((l) => Uint8Array.from(Buffer.from((l.split(" | ")[1] ?? "").replace(/\s+/g, ""), "hex")));

/**
 * Everything the decoder gives for `bytes`, or the CodecError it threw (anything else fails).
 * @param {() => ServerFrameDecoder | ClientFrameDecoder} make
 * @param {Uint8Array[]} chunks
 */
function decodeAll(make, chunks) {
  const d = make();
  /** @type {unknown[]} */
  const frames = [];
  try {
    for (const chunk of chunks) {
      d.push(chunk);
      for (let f = d.next(); f !== undefined; f = d.next()) frames.push(f);
    }
    return { frames, error: undefined };
  } catch (e) {
    if (!(e instanceof CodecError)) throw e;
    if (e.kind === "Refused") {
      // Not fatal: a client-frame decoder may go on; stop here for the comparison.
      return { frames, error: e.kind };
    }
    return { frames, error: e.kind };
  }
}

const smallLimits = () => new ServerFrameDecoder(4096);
const clientDecoder = () => new ClientFrameDecoder();

test("random bytes: only CodecError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      decodeAll(smallLimits, [bytes]);
      decodeAll(clientDecoder, [bytes]);
    }),
    { numRuns: RUNS * 2 },
  );
});

test("random bodies behind a plausible header: only CodecError", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        0x81,
        0x82,
        0x83,
        0x84,
        0x85,
        0x86,
        0x87,
        0x88,
        0x89,
        0x8a,
      ),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ maxLength: 200 }),
      (type, flags, body) => {
        const frame = new Uint8Array(6 + body.length);
        new DataView(frame.buffer).setUint32(0, body.length + 2);
        frame[4] = type;
        frame[5] = flags;
        frame.set(body, 6);
        decodeAll(smallLimits, [frame]);
        decodeAll(clientDecoder, [frame]);
      },
    ),
    { numRuns: RUNS * 4 },
  );
});

test("mutated vectors: only CodecError", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...VECTOR_FRAMES),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.nat(),
      (frame, flips, cut) => {
        const bytes = frame.slice();
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        const truncated = bytes.subarray(0, bytes.length - (cut % 3));
        decodeAll(smallLimits, [truncated]);
        decodeAll(clientDecoder, [truncated]);
      },
    ),
    { numRuns: RUNS * 4 },
  );
});

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const text = fc.string({ maxLength: 20 });
const bytes = fc.uint8Array({ maxLength: 40 });
const member = fc.record({ user: text, sinceMs: u64, connections: u16, info: bytes });

/** @type {fc.Arbitrary<ServerFrame>} */
const serverFrame = fc.oneof(
  fc.constant(/** @type {ServerFrame} */ ({ type: "PING" })),
  fc.constant(/** @type {ServerFrame} */ ({ type: "PONG" })),
  fc.record({
    type: fc.constant(/** @type {const} */ ("WELCOME")),
    version: u16,
    shardCount: u16,
    maxPayload: u32,
    maxFrame: u32,
    pingIntervalMs: u32,
    clientId: u64,
    logEpoch: u64,
    serverId: text,
  }),
  fc.record(
    {
      type: fc.constant(/** @type {const} */ ("MESSAGE")),
      sid: u32,
      priority: fc.integer({ min: 0, max: 255 }),
      shard: u16,
      sequence: u64,
      timestamp: u64,
      subject: text,
      reply: text,
      headers: bytes,
      payload: bytes,
      replayed: fc.boolean(),
    },
    {
      requiredKeys: [
        "type",
        "sid",
        "priority",
        "shard",
        "sequence",
        "timestamp",
        "subject",
        "payload",
        "replayed",
      ],
    },
  ),
  fc.record({
    type: fc.constant(/** @type {const} */ ("PUBLISH_ACK")),
    ackId: u64,
    result: fc.oneof(
      fc.record({
        kind: fc.constant(/** @type {const} */ ("stored")),
        shard: u16,
        sequence: u64,
        duplicate: fc.boolean(),
      }),
      fc.record({ kind: fc.constant(/** @type {const} */ ("refused")), code: u16, message: text }),
    ),
  }),
  fc.record(
    {
      type: fc.constant(/** @type {const} */ ("ERROR")),
      code: u16,
      fatal: fc.boolean(),
      sid: u32,
      message: text,
    },
    { requiredKeys: ["type", "code", "fatal", "message"] },
  ),
  fc.record({
    type: fc.constant(/** @type {const} */ ("DROP_NOTICE")),
    sid: u32,
    dropped: u64,
    ranges: fc.array(
      fc
        .tuple(u16, u64, u64)
        .map(([shard, a, b]) => ({ shard, first: a < b ? a : b, last: a < b ? b : a })),
      { maxLength: 4 },
    ),
  }),
  fc.record({
    type: fc.constant(/** @type {const} */ ("GAP_NOTICE")),
    sid: u32,
    shard: u16,
    requested: u64,
    oldest: u64,
  }),
  fc.record({
    type: fc.constant(/** @type {const} */ ("GOAWAY")),
    closeWithinMs: u32,
    reason: text,
  }),
  fc.record({
    type: fc.constant(/** @type {const} */ ("SUBSCRIBED")),
    sid: u32,
    epoch: u64,
    lastSequences: fc.array(u64, { maxLength: 5 }),
  }),
  fc.record({ type: fc.constant(/** @type {const} */ ("CHALLENGE")), nonce: text }),
  fc.record({
    type: fc.constant(/** @type {const} */ ("PRESENCE")),
    id: u32,
    query: fc.boolean(),
    more: fc.boolean(),
    count: u32,
    body: fc.oneof(
      fc.record({ kind: fc.constant(/** @type {const} */ ("join")), member }),
      fc.record({ kind: fc.constant(/** @type {const} */ ("leave")), user: text }),
      fc.record({
        kind: fc.constant(/** @type {const} */ ("joined")),
        user: text,
        memberToken: bytes,
      }),
      fc.record({
        kind: fc.constant(/** @type {const} */ ("snapshot")),
        offset: u32,
        members: fc.array(member, { maxLength: 3 }),
      }),
      fc.record({
        kind: fc.constant(/** @type {const} */ ("page")),
        offset: u32,
        members: fc.array(member, { maxLength: 3 }),
      }),
      fc.record({ kind: fc.constant(/** @type {const} */ ("refused")), code: u16, message: text }),
    ),
  }),
);

/**
 * A copy with ordinary prototypes (fast-check's records have none, which deepEqual sees).
 * @param {unknown} v
 * @returns {any}
 */
function plain(v) {
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
}

/** @param {Uint8Array[]} parts */
function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

test("server frames: encode, decode, encode again give the same bytes and value", () => {
  fc.assert(
    fc.property(serverFrame, (frame) => {
      const wire = encodeServerFrame(frame);
      const { frames, error } = decodeAll(() => new ServerFrameDecoder(), [wire]);
      assert.equal(error, undefined);
      assert.equal(frames.length, 1);
      assert.deepEqual(frames[0], plain(frame));
      assert.deepEqual(encodeServerFrame(/** @type {ServerFrame} */ (frames[0])), wire);
    }),
    { numRuns: RUNS * 2 },
  );
});

test("a stream split anywhere decodes as when it arrives whole", () => {
  fc.assert(
    fc.property(
      fc.array(serverFrame, { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (frames, cuts) => {
        const stream = concat(frames.map((f) => encodeServerFrame(f)));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        /** @type {Uint8Array[]} */
        const chunks = [];
        let from = 0;
        for (const p of [...points, stream.length]) {
          chunks.push(stream.slice(from, p));
          from = p;
        }
        const whole = decodeAll(() => new ServerFrameDecoder(), [stream]);
        const split = decodeAll(() => new ServerFrameDecoder(), chunks);
        assert.deepEqual(split, whole);
        assert.deepEqual(whole.frames, plain(frames));
      },
    ),
    { numRuns: RUNS },
  );
});

test("client frames from the vectors, split byte by byte, decode as whole", () => {
  const stream = concat(VECTOR_FRAMES.filter((_, i) => i < 20));
  const whole = decodeAll(clientDecoder, [stream]);
  const bytewise = decodeAll(
    clientDecoder,
    [...stream].map((b) => Uint8Array.of(b)),
  );
  assert.deepEqual(bytewise, whole);
  for (const f of whole.frames) {
    assert.ok(encodeClientFrame(/** @type {ClientFrame} */ (f)).length > 0);
  }
});
