// The binary protocol's codec (docs/protocol-binary.md): the preface, every client and
// server frame as typed values, their encoders, and streaming decoders for both directions.
//
// Owns: the byte layout, structure checks (length, type, flags, fields, trailing bytes) and
// the content checks a receiver applies (subjects, priority, header block). Must never do
// I/O, keep state beyond one decoder's partial frame (bounded by 4 + max frame bytes), or
// throw anything but `CodecError` on bad input.

/** Protocol versions this codec speaks. */
export const PROTOCOL_VERSION = 1;

/** Limits a decoder applies (the server's defaults, as in `Limits::default`). */
export interface Limits {
  /** Largest frame `length` accepted. */
  maxFrame: number;
  /** Largest header block + payload accepted (content check of PUBLISH). */
  maxPayload: number;
  /** Most tokens in a subject, filter or queue group (content checks of client frames). */
  maxSubjectTokens: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFrame: 1_048_576 + 65_536,
  maxPayload: 1_048_576,
  maxSubjectTokens: 256,
});

/** Error codes (`u16`); codes not listed here may arrive and are kept as numbers. */
export const ErrorCode = Object.freeze({
  ProtocolViolation: 0x0001,
  UnsupportedVersion: 0x0002,
  FrameTooLarge: 0x0003,
  AuthorizationViolation: 0x0004,
  HelloExpected: 0x0005,
  AuthenticationExpired: 0x0006,
  AuthenticationTimeout: 0x0007,
  InvalidSubject: 0x0101,
  PayloadTooLarge: 0x0102,
  InvalidPriority: 0x0103,
  InvalidHeaders: 0x0104,
  InvalidOption: 0x0105,
  UnknownSubscription: 0x0106,
  DuplicateSubscription: 0x0107,
  EpochMismatch: 0x0108,
  PermissionViolation: 0x0109,
  PresenceRefused: 0x010a,
  TooManySubscriptions: 0x0201,
  RateLimited: 0x0202,
  Overloaded: 0x0203,
  TooManyConnections: 0x0204,
  SlowConsumer: 0x0205,
  Internal: 0x0301,
});

/** The name of a code, or `Unknown(0x....)`. */
export function errorCodeName(code: number): string {
  for (const [name, value] of Object.entries(ErrorCode)) {
    if (value === code) {
      return name;
    }
  }
  return `Unknown(0x${code.toString(16).padStart(4, "0")})`;
}

/** What a decoder refused, as the reference codec names it. */
export type CodecErrorKind =
  | "BadMagic"
  | "FrameTooShort"
  | "FrameTooLarge"
  | "UnknownFrameType"
  | "ReservedFlags"
  | "Truncated"
  | "TrailingBytes"
  | "InvalidValue"
  /** A structurally sound client frame whose content a server refuses (not fatal). */
  | "Refused"
  /** A value that cannot be encoded (a field over its length prefix, a number out of range). */
  | "Unencodable";

/** The only error the codec throws. */
export class CodecError extends Error {
  override name = "CodecError";
  /** The error code a server would send for it. */
  readonly code: number;
  /** False only for `Refused`: the stream can still be trusted. */
  readonly fatal: boolean;
  constructor(
    readonly kind: CodecErrorKind,
    message: string,
    code?: number,
    /** For `Refused`: the sid of a refused SUBSCRIBE, the ack id of a refused PUBLISH. */
    readonly sid?: number,
    readonly ackId?: bigint,
  ) {
    super(message);
    this.code =
      code ??
      (kind === "FrameTooLarge"
        ? ErrorCode.FrameTooLarge
        : kind === "Unencodable"
          ? ErrorCode.InvalidOption
          : ErrorCode.ProtocolViolation);
    this.fatal = kind !== "Refused" && kind !== "Unencodable";
  }
}

// ---------------------------------------------------------------------------------------
// Frame values

export interface Preface {
  minVersion: number;
  maxVersion: number;
}

export interface ResumeToken {
  /** The log epoch the sequences belong to (from WELCOME / SUBSCRIBED). */
  epoch: bigint;
  /** For shard i, the last sequence seen (0: none). */
  lastSequences: bigint[];
}

export type StartPosition =
  | { mode: "live" }
  | { mode: "resume"; token: ResumeToken }
  /** Nanoseconds since the Unix epoch. */
  | { mode: "time"; time: bigint }
  | { mode: "lastN"; n: number };

export interface Hello {
  type: "HELLO";
  name: string;
  version: string;
  echo: boolean;
  token?: string;
  user?: string;
  pass?: string;
  nkey?: string;
  /** A request nobody receives is answered with a `503` status (flag bit 4). */
  noResponders?: boolean;
}
export interface Auth {
  type: "AUTH";
  token?: string;
  signature?: string;
}
export interface Publish {
  type: "PUBLISH";
  priority: number;
  ackId?: bigint;
  subject: string;
  reply?: string;
  messageId?: string;
  coalescingKey?: string;
  headers?: Uint8Array;
  payload: Uint8Array;
}
export interface PresenceJoin {
  info: Uint8Array;
  memberToken?: Uint8Array;
}
export interface Subscribe {
  type: "SUBSCRIBE";
  sid: number;
  maxQueueMessages: number;
  maxQueueBytes: number;
  subject: string;
  queue?: string;
  lossless: boolean;
  start: StartPosition;
  presence?: PresenceJoin;
  presenceEvents: boolean;
}
export interface Unsubscribe {
  type: "UNSUBSCRIBE";
  sid: number;
  max?: bigint;
}
export interface PresenceQuery {
  type: "PRESENCE_QUERY";
  id: number;
  room: string;
  offset: number;
  limit: number;
  countOnly: boolean;
}
export interface Ping {
  type: "PING";
}
export interface Pong {
  type: "PONG";
}

export type ClientFrame =
  Hello | Auth | Publish | Subscribe | Unsubscribe | PresenceQuery | Ping | Pong;

export interface Welcome {
  type: "WELCOME";
  version: number;
  shardCount: number;
  maxPayload: number;
  maxFrame: number;
  pingIntervalMs: number;
  clientId: bigint;
  logEpoch: bigint;
  serverId: string;
}
export interface Message {
  type: "MESSAGE";
  sid: number;
  priority: number;
  shard: number;
  sequence: bigint;
  timestamp: bigint;
  subject: string;
  reply?: string;
  headers?: Uint8Array;
  payload: Uint8Array;
  replayed: boolean;
}
export type AckResult =
  | { kind: "stored"; shard: number; sequence: bigint; duplicate: boolean }
  | { kind: "refused"; code: number; message: string };
export interface PublishAck {
  type: "PUBLISH_ACK";
  ackId: bigint;
  result: AckResult;
}
export interface ErrorFrame {
  type: "ERROR";
  code: number;
  fatal: boolean;
  sid?: number;
  message: string;
}
export interface SequenceRange {
  shard: number;
  first: bigint;
  last: bigint;
}
export interface DropNotice {
  type: "DROP_NOTICE";
  sid: number;
  dropped: bigint;
  ranges: SequenceRange[];
}
export interface GapNotice {
  type: "GAP_NOTICE";
  sid: number;
  shard: number;
  requested: bigint;
  oldest: bigint;
}
export interface GoAway {
  type: "GOAWAY";
  closeWithinMs: number;
  reason: string;
}
export interface Subscribed {
  type: "SUBSCRIBED";
  sid: number;
  epoch: bigint;
  lastSequences: bigint[];
}
export interface Challenge {
  type: "CHALLENGE";
  nonce: string;
}
export interface Member {
  /** The authenticated user, or `name#client id`. */
  user: string;
  /** When it joined, ms since the Unix epoch. */
  sinceMs: bigint;
  /** Its connections; 0 while it lingers in the grace window. */
  connections: number;
  info: Uint8Array;
}
export type PresenceBody =
  | { kind: "join"; member: Member }
  | { kind: "leave"; user: string }
  | { kind: "joined"; user: string; memberToken: Uint8Array }
  | { kind: "snapshot"; offset: number; members: Member[] }
  | { kind: "page"; offset: number; members: Member[] }
  | { kind: "refused"; code: number; message: string };
export interface Presence {
  type: "PRESENCE";
  /** The sid, or with `query` the query id. */
  id: number;
  query: boolean;
  more: boolean;
  count: number;
  body: PresenceBody;
}

export type ServerFrame =
  | Welcome
  | Message
  | PublishAck
  | ErrorFrame
  | DropNotice
  | GapNotice
  | GoAway
  | Subscribed
  | Challenge
  | Presence
  | Ping
  | Pong;

// ---------------------------------------------------------------------------------------
// Encoding

const MAGIC = [0x54, 0x45, 0x52, 0x4e]; // "TERN"
const encoder = new TextEncoder();

/** The UTF-8 of the short strings frames carry (subjects, reply subjects, ids), for the
 * next frame with the same: a publisher sends to a few subjects over and over, and their
 * encoding was a fifth of a publish's cost. Bounded: emptied at `UTF8_CACHE` entries. The
 * bytes are only ever copied into frames, never changed. */
const utf8Cache = new Map<string, Uint8Array>();
const UTF8_CACHE = 1024;

function utf8(s: string): Uint8Array {
  let b = utf8Cache.get(s);
  if (b === undefined) {
    b = encoder.encode(s);
    if (utf8Cache.size >= UTF8_CACHE) utf8Cache.clear();
    utf8Cache.set(s, b);
  }
  return b;
}
const decoder = new TextDecoder("utf-8"); // not fatal: a subject a text client published
// in another encoding must not bring the connection down; valid UTF-8 round-trips exactly.

const U16_MAX = 0xffff;
const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

class Writer {
  buf: Uint8Array;
  view: DataView;
  pos = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }
  #room(n: number): void {
    if (this.pos + n <= this.buf.length) {
      return;
    }
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(v: number, what: string): void {
    checkUint(v, 0xff, what);
    this.#room(1);
    this.view.setUint8(this.pos, v);
    this.pos += 1;
  }
  u16(v: number, what: string): void {
    checkUint(v, U16_MAX, what);
    this.#room(2);
    this.view.setUint16(this.pos, v);
    this.pos += 2;
  }
  u32(v: number, what: string): void {
    checkUint(v, U32_MAX, what);
    this.#room(4);
    this.view.setUint32(this.pos, v);
    this.pos += 4;
  }
  u64(v: bigint, what: string): void {
    if (typeof v !== "bigint" || v < 0n || v > U64_MAX) {
      throw new CodecError("Unencodable", `${what}: ${String(v)} is not a u64 (a bigint)`);
    }
    this.#room(8);
    this.view.setBigUint64(this.pos, v);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.#room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  short(v: string | Uint8Array, what: string): void {
    const b = typeof v === "string" ? utf8(v) : v;
    if (b.length > U16_MAX) {
      throw new CodecError("Unencodable", `${what}: ${b.length} bytes, at most 65535`);
    }
    this.u16(b.length, what);
    this.bytes(b);
  }
  long(b: Uint8Array, what: string): void {
    if (b.length > U32_MAX) {
      throw new CodecError("Unencodable", `${what}: too long`);
    }
    this.u32(b.length, what);
    this.bytes(b);
  }
  /** Room for `n` more bytes from here. */
  reserve(n: number): void {
    this.#room(n);
  }
  /** The frame, with its length filled in (the writer started with 6 bytes reserved): a
   * copy of its own (the writer is used again for the next frame), from the frame slab. */
  finish(): Uint8Array {
    this.view.setUint32(0, this.pos - 4);
    return ownCopy(this.buf.subarray(0, this.pos));
  }
}

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new CodecError("Unencodable", `${what}: ${v} is not an integer in 0..=${max}`);
  }
}

/** Frames are copied out of the scratch writer into a slab of `SLAB` bytes, one after
 * the other, and handed out as views of it: one allocation per slab, not per frame (an
 * allocation per frame was the largest cost of a publish), and frames encoded one after
 * the other lie side by side, so a turn's frames go to the socket without being joined
 * (`transport.ts`'s `batched`). A slab is never written again where a frame was handed
 * out; a frame keeps its slab alive. Frames over a quarter of a slab get a buffer of
 * their own. */
const SLAB = 64 * 1024;
let slab = new Uint8Array(SLAB);
let slabAt = 0;

function ownCopy(bytes: Uint8Array): Uint8Array {
  const n = bytes.length;
  if (n > SLAB / 4) return bytes.slice();
  if (slabAt + n > slab.length) {
    slab = new Uint8Array(SLAB);
    slabAt = 0;
  }
  const out = slab.subarray(slabAt, slabAt + n);
  out.set(bytes);
  slabAt += n;
  return out;
}

/** The one writer frames are encoded in (grown as needed, never shrunk past 64 KiB):
 * encoding is synchronous and `finish` copies the frame out, so a frame costs one
 * allocation of its own size, not a growing buffer and a view per frame. */
let scratch = new Writer(4096);

function frameWriter(type: number, flags: number, capacity = 64): Writer {
  if (scratch.buf.length > 64 * 1024 && capacity + 6 <= 4096) scratch = new Writer(4096);
  const w = scratch;
  w.pos = 0;
  w.reserve(capacity + 6);
  w.pos = 4;
  w.u8(type, "type");
  w.u8(flags, "flags");
  return w;
}

/** The 8-byte preface. */
export function encodePreface(p: Preface = { minVersion: 1, maxVersion: 1 }): Uint8Array {
  const w = new Writer(8);
  w.bytes(Uint8Array.from(MAGIC));
  w.u16(p.minVersion, "min version");
  w.u16(p.maxVersion, "max version");
  return w.buf;
}

function encodeStart(w: Writer, start: StartPosition): void {
  switch (start.mode) {
    case "live":
      return;
    case "resume":
      w.u64(start.token.epoch, "epoch");
      w.u16(start.token.lastSequences.length, "shard count");
      for (const s of start.token.lastSequences) {
        w.u64(s, "last sequence");
      }
      return;
    case "time":
      w.u64(start.time, "start time");
      return;
    case "lastN":
      w.u32(start.n, "last N");
      return;
  }
}

const START_MODE = { live: 0, resume: 1, time: 2, lastN: 3 } as const;

/** Encodes a client frame (throws `CodecError` "Unencodable" for values out of range). */
export function encodeClientFrame(f: ClientFrame): Uint8Array {
  switch (f.type) {
    case "HELLO": {
      const userPass = f.user !== undefined || f.pass !== undefined;
      const flags =
        (f.echo ? 0x01 : 0) |
        (f.token !== undefined ? 0x02 : 0) |
        (userPass ? 0x04 : 0) |
        (f.nkey !== undefined ? 0x08 : 0) |
        (f.noResponders === true ? 0x10 : 0);
      const w = frameWriter(0x01, flags);
      w.short(f.name, "client name");
      w.short(f.version, "client version");
      if (f.token !== undefined) w.short(f.token, "token");
      if (userPass) {
        w.short(f.user ?? "", "user");
        w.short(f.pass ?? "", "pass");
      }
      if (f.nkey !== undefined) w.short(f.nkey, "nkey");
      return w.finish();
    }
    case "AUTH": {
      const flags = (f.token !== undefined ? 0x01 : 0) | (f.signature !== undefined ? 0x02 : 0);
      if (flags === 0) {
        throw new CodecError("Unencodable", "AUTH needs a token or a signature");
      }
      const w = frameWriter(0x07, flags);
      if (f.token !== undefined) w.short(f.token, "token");
      if (f.signature !== undefined) w.short(f.signature, "signature");
      return w.finish();
    }
    case "PUBLISH": {
      const flags =
        (f.reply !== undefined ? 0x01 : 0) |
        (f.headers !== undefined ? 0x02 : 0) |
        (f.messageId !== undefined ? 0x04 : 0) |
        (f.coalescingKey !== undefined ? 0x08 : 0) |
        (f.ackId !== undefined ? 0x10 : 0);
      const w = frameWriter(0x02, flags, 64 + f.payload.length + (f.headers?.length ?? 0));
      w.u8(f.priority, "priority");
      if (f.ackId !== undefined) w.u64(f.ackId, "ack id");
      w.short(f.subject, "subject");
      if (f.reply !== undefined) w.short(f.reply, "reply");
      if (f.messageId !== undefined) w.short(f.messageId, "message id");
      if (f.coalescingKey !== undefined) w.short(f.coalescingKey, "coalescing key");
      if (f.headers !== undefined) w.long(f.headers, "headers");
      w.long(f.payload, "payload");
      return w.finish();
    }
    case "SUBSCRIBE": {
      const flags =
        (f.queue !== undefined ? 0x01 : 0) |
        (f.lossless ? 0x02 : 0) |
        (START_MODE[f.start.mode] << 2) |
        (f.presence !== undefined ? 0x10 : 0) |
        (f.presenceEvents ? 0x20 : 0) |
        (f.presence?.memberToken !== undefined ? 0x40 : 0);
      const w = frameWriter(0x03, flags);
      w.u32(f.sid, "sid");
      w.u32(f.maxQueueMessages, "max queue messages");
      w.u32(f.maxQueueBytes, "max queue bytes");
      w.short(f.subject, "subject");
      if (f.queue !== undefined) w.short(f.queue, "queue group");
      encodeStart(w, f.start);
      if (f.presence !== undefined) {
        w.long(f.presence.info, "presence info");
        if (f.presence.memberToken !== undefined) {
          w.short(f.presence.memberToken, "member token");
        }
      }
      return w.finish();
    }
    case "UNSUBSCRIBE": {
      const w = frameWriter(0x04, f.max !== undefined ? 0x01 : 0);
      w.u32(f.sid, "sid");
      if (f.max !== undefined) w.u64(f.max, "max");
      return w.finish();
    }
    case "PRESENCE_QUERY": {
      const w = frameWriter(0x08, f.countOnly ? 0x01 : 0);
      w.u32(f.id, "query id");
      w.short(f.room, "room");
      w.u32(f.offset, "offset");
      w.u32(f.limit, "limit");
      return w.finish();
    }
    case "PING":
      return frameWriter(0x05, 0).finish();
    case "PONG":
      return frameWriter(0x06, 0).finish();
  }
}

function encodeMember(w: Writer, m: Member): void {
  w.short(m.user, "user");
  w.u64(m.sinceMs, "since");
  w.u16(m.connections, "connections");
  w.long(m.info, "info");
}

const PRESENCE_KIND = { join: 0, leave: 1, joined: 2, snapshot: 3, page: 4, refused: 5 } as const;

/** Encodes a server frame (for tests and test servers; a client never sends one). */
export function encodeServerFrame(f: ServerFrame): Uint8Array {
  switch (f.type) {
    case "WELCOME": {
      const w = frameWriter(0x81, 0);
      w.u16(f.version, "version");
      w.u16(f.shardCount, "shard count");
      w.u32(f.maxPayload, "max payload");
      w.u32(f.maxFrame, "max frame");
      w.u32(f.pingIntervalMs, "ping interval");
      w.u64(f.clientId, "client id");
      w.u64(f.logEpoch, "log epoch");
      w.short(f.serverId, "server id");
      return w.finish();
    }
    case "MESSAGE": {
      const flags =
        (f.reply !== undefined ? 0x01 : 0) |
        (f.headers !== undefined ? 0x02 : 0) |
        (f.replayed ? 0x04 : 0);
      const w = frameWriter(0x82, flags, 64 + f.payload.length + (f.headers?.length ?? 0));
      w.u32(f.sid, "sid");
      w.u8(f.priority, "priority");
      w.u16(f.shard, "shard");
      w.u64(f.sequence, "sequence");
      w.u64(f.timestamp, "timestamp");
      w.short(f.subject, "subject");
      if (f.reply !== undefined) w.short(f.reply, "reply");
      if (f.headers !== undefined) w.long(f.headers, "headers");
      w.long(f.payload, "payload");
      return w.finish();
    }
    case "PUBLISH_ACK": {
      const r = f.result;
      const flags = r.kind === "refused" ? 0x01 : r.duplicate ? 0x02 : 0;
      const w = frameWriter(0x83, flags);
      w.u64(f.ackId, "ack id");
      if (r.kind === "refused") {
        w.u16(r.code, "code");
        w.short(r.message, "message");
      } else {
        w.u16(r.shard, "shard");
        w.u64(r.sequence, "sequence");
      }
      return w.finish();
    }
    case "ERROR": {
      const w = frameWriter(0x84, (f.fatal ? 0x01 : 0) | (f.sid !== undefined ? 0x02 : 0));
      w.u16(f.code, "code");
      if (f.sid !== undefined) w.u32(f.sid, "sid");
      w.short(f.message, "message");
      return w.finish();
    }
    case "DROP_NOTICE": {
      const w = frameWriter(0x85, 0);
      w.u32(f.sid, "sid");
      w.u64(f.dropped, "dropped");
      w.u16(f.ranges.length, "range count");
      for (const r of f.ranges) {
        if (r.first > r.last) {
          throw new CodecError("Unencodable", "drop range with first > last");
        }
        w.u16(r.shard, "shard");
        w.u64(r.first, "first");
        w.u64(r.last, "last");
      }
      return w.finish();
    }
    case "GAP_NOTICE": {
      const w = frameWriter(0x86, 0);
      w.u32(f.sid, "sid");
      w.u16(f.shard, "shard");
      w.u64(f.requested, "requested");
      w.u64(f.oldest, "oldest");
      return w.finish();
    }
    case "GOAWAY": {
      const w = frameWriter(0x87, 0);
      w.u32(f.closeWithinMs, "close within");
      w.short(f.reason, "reason");
      return w.finish();
    }
    case "SUBSCRIBED": {
      const w = frameWriter(0x88, 0);
      w.u32(f.sid, "sid");
      w.u64(f.epoch, "epoch");
      w.u16(f.lastSequences.length, "shard count");
      for (const s of f.lastSequences) w.u64(s, "last sequence");
      return w.finish();
    }
    case "CHALLENGE": {
      const w = frameWriter(0x89, 0);
      w.short(f.nonce, "nonce");
      return w.finish();
    }
    case "PRESENCE": {
      const w = frameWriter(0x8a, (f.query ? 0x01 : 0) | (f.more ? 0x02 : 0));
      w.u32(f.id, "id");
      w.u8(PRESENCE_KIND[f.body.kind], "kind");
      w.u32(f.count, "count");
      const b = f.body;
      switch (b.kind) {
        case "join":
          encodeMember(w, b.member);
          break;
        case "leave":
          w.short(b.user, "user");
          break;
        case "joined":
          w.short(b.user, "user");
          w.short(b.memberToken, "member token");
          break;
        case "snapshot":
        case "page":
          w.u32(b.offset, "offset");
          w.u16(b.members.length, "member count");
          for (const m of b.members) encodeMember(w, m);
          break;
        case "refused":
          w.u16(b.code, "code");
          w.short(b.message, "message");
          break;
      }
      return w.finish();
    }
    case "PING":
      return frameWriter(0x05, 0).finish();
    case "PONG":
      return frameWriter(0x06, 0).finish();
  }
}

// ---------------------------------------------------------------------------------------
// Decoding

class Reader {
  pos = 0;
  readonly view: DataView;
  constructor(
    readonly body: Uint8Array,
    readonly frame: string,
  ) {
    this.view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  }
  #need(n: number, field: string): void {
    if (this.pos + n > this.body.length) {
      throw new CodecError("Truncated", `${this.frame}: body ends inside ${field}`);
    }
  }
  u8(field: string): number {
    this.#need(1, field);
    return this.view.getUint8(this.pos++);
  }
  u16(field: string): number {
    this.#need(2, field);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.#need(4, field);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  u64(field: string): bigint {
    this.#need(8, field);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }
  raw(n: number, field: string): Uint8Array {
    this.#need(n, field);
    // A view, not a copy: the frame splitter never writes again memory it handed out.
    const b = this.body.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  shortBytes(field: string): Uint8Array {
    return this.raw(this.u16(field), field);
  }
  short(field: string): string {
    // Decoded straight from the frame: the string is the copy.
    const n = this.u16(field);
    this.#need(n, field);
    const text = decoder.decode(this.body.subarray(this.pos, this.pos + n));
    this.pos += n;
    return text;
  }
  long(field: string): Uint8Array {
    return this.raw(this.u32(field), field);
  }
  end(): void {
    if (this.pos !== this.body.length) {
      throw new CodecError(
        "TrailingBytes",
        `${this.frame}: ${this.body.length - this.pos} bytes after the last field`,
      );
    }
  }
}

function flagsAllowed(frame: string, flags: number, allowed: number): void {
  if ((flags & ~allowed) !== 0) {
    throw new CodecError(
      "ReservedFlags",
      `${frame}: reserved flags 0x${flags.toString(16).padStart(2, "0")}`,
    );
  }
}

function decodeStart(r: Reader, mode: number): StartPosition {
  switch (mode) {
    case 0:
      return { mode: "live" };
    case 1: {
      const epoch = r.u64("epoch");
      const n = r.u16("shard count");
      const lastSequences: bigint[] = [];
      for (let i = 0; i < n; i++) lastSequences.push(r.u64("last sequence"));
      return { mode: "resume", token: { epoch, lastSequences } };
    }
    case 2:
      return { mode: "time", time: r.u64("start time") };
    default:
      return { mode: "lastN", n: r.u32("last N") };
  }
}

const CLIENT_NAMES: Record<number, string> = {
  0x01: "HELLO",
  0x02: "PUBLISH",
  0x03: "SUBSCRIBE",
  0x04: "UNSUBSCRIBE",
  0x05: "PING",
  0x06: "PONG",
  0x07: "AUTH",
  0x08: "PRESENCE_QUERY",
};
const SERVER_NAMES: Record<number, string> = {
  0x05: "PING",
  0x06: "PONG",
  0x81: "WELCOME",
  0x82: "MESSAGE",
  0x83: "PUBLISH_ACK",
  0x84: "ERROR",
  0x85: "DROP_NOTICE",
  0x86: "GAP_NOTICE",
  0x87: "GOAWAY",
  0x88: "SUBSCRIBED",
  0x89: "CHALLENGE",
  0x8a: "PRESENCE",
};

function unknownType(type: number): CodecError {
  return new CodecError(
    "UnknownFrameType",
    `unknown frame type 0x${type.toString(16).padStart(2, "0")}`,
  );
}

/** Decodes one client frame's type, flags and body (structure only). */
export function decodeClientBody(type: number, flags: number, body: Uint8Array): ClientFrame {
  const name = CLIENT_NAMES[type];
  if (name === undefined) throw unknownType(type);
  const r = new Reader(body, name);
  let f: ClientFrame;
  switch (type) {
    case 0x01: {
      flagsAllowed(name, flags, 0x1f);
      const hello: Hello = {
        type: "HELLO",
        name: r.short("client name"),
        version: r.short("client version"),
        echo: (flags & 0x01) !== 0,
      };
      if (flags & 0x02) hello.token = r.short("token");
      if (flags & 0x04) {
        hello.user = r.short("user");
        hello.pass = r.short("pass");
      }
      if (flags & 0x08) hello.nkey = r.short("nkey");
      if (flags & 0x10) hello.noResponders = true;
      f = hello;
      break;
    }
    case 0x02: {
      flagsAllowed(name, flags, 0x1f);
      const priority = r.u8("priority");
      const ackId = flags & 0x10 ? r.u64("ack id") : undefined;
      const p: Publish = { type: "PUBLISH", priority, subject: r.short("subject"), payload: EMPTY };
      if (ackId !== undefined) p.ackId = ackId;
      if (flags & 0x01) p.reply = r.short("reply");
      if (flags & 0x04) p.messageId = r.short("message id");
      if (flags & 0x08) p.coalescingKey = r.short("coalescing key");
      if (flags & 0x02) p.headers = r.long("headers");
      p.payload = r.long("payload");
      f = p;
      break;
    }
    case 0x03: {
      flagsAllowed(name, flags, 0x7f);
      if (flags & 0x40 && !(flags & 0x10)) {
        throw new CodecError("InvalidValue", "SUBSCRIBE: member token without presence");
      }
      const s: Subscribe = {
        type: "SUBSCRIBE",
        sid: r.u32("sid"),
        maxQueueMessages: r.u32("max queue messages"),
        maxQueueBytes: r.u32("max queue bytes"),
        subject: r.short("subject"),
        lossless: (flags & 0x02) !== 0,
        start: { mode: "live" },
        presenceEvents: (flags & 0x20) !== 0,
      };
      if (flags & 0x01) s.queue = r.short("queue group");
      s.start = decodeStart(r, (flags >> 2) & 0x03);
      if (flags & 0x10) {
        const join: PresenceJoin = { info: r.long("presence info") };
        if (flags & 0x40) join.memberToken = r.shortBytes("member token");
        s.presence = join;
      }
      f = s;
      break;
    }
    case 0x04: {
      flagsAllowed(name, flags, 0x01);
      const u: Unsubscribe = { type: "UNSUBSCRIBE", sid: r.u32("sid") };
      if (flags & 0x01) u.max = r.u64("max");
      f = u;
      break;
    }
    case 0x05:
    case 0x06:
      flagsAllowed(name, flags, 0);
      f = { type: type === 0x05 ? "PING" : "PONG" };
      break;
    case 0x07: {
      flagsAllowed(name, flags, 0x03);
      if (flags === 0) {
        throw new CodecError("InvalidValue", "AUTH: flags (neither token nor signature)");
      }
      const a: Auth = { type: "AUTH" };
      if (flags & 0x01) a.token = r.short("token");
      if (flags & 0x02) a.signature = r.short("signature");
      f = a;
      break;
    }
    default: {
      flagsAllowed(name, flags, 0x01);
      f = {
        type: "PRESENCE_QUERY",
        id: r.u32("query id"),
        room: r.short("room"),
        offset: r.u32("offset"),
        limit: r.u32("limit"),
        countOnly: (flags & 0x01) !== 0,
      };
    }
  }
  r.end();
  return f;
}

const EMPTY = new Uint8Array(0);

function decodeMember(r: Reader): Member {
  return {
    user: r.short("user"),
    sinceMs: r.u64("since"),
    connections: r.u16("connections"),
    info: r.long("info"),
  };
}

function decodeMembers(r: Reader): Member[] {
  const n = r.u16("member count");
  const members: Member[] = [];
  for (let i = 0; i < n; i++) members.push(decodeMember(r));
  return members;
}

/** Decodes one server frame's type, flags and body. */
export function decodeServerBody(type: number, flags: number, body: Uint8Array): ServerFrame {
  const name = SERVER_NAMES[type];
  if (name === undefined) throw unknownType(type);
  const r = new Reader(body, name);
  let f: ServerFrame;
  switch (type) {
    case 0x05:
    case 0x06:
      flagsAllowed(name, flags, 0);
      f = { type: type === 0x05 ? "PING" : "PONG" };
      break;
    case 0x81:
      flagsAllowed(name, flags, 0);
      f = {
        type: "WELCOME",
        version: r.u16("version"),
        shardCount: r.u16("shard count"),
        maxPayload: r.u32("max payload"),
        maxFrame: r.u32("max frame"),
        pingIntervalMs: r.u32("ping interval"),
        clientId: r.u64("client id"),
        logEpoch: r.u64("log epoch"),
        serverId: r.short("server id"),
      };
      break;
    case 0x82: {
      flagsAllowed(name, flags, 0x07);
      const m: Message = {
        type: "MESSAGE",
        sid: r.u32("sid"),
        priority: r.u8("priority"),
        shard: r.u16("shard"),
        sequence: r.u64("sequence"),
        timestamp: r.u64("timestamp"),
        subject: r.short("subject"),
        payload: EMPTY,
        replayed: (flags & 0x04) !== 0,
      };
      if (flags & 0x01) m.reply = r.short("reply");
      if (flags & 0x02) m.headers = r.long("headers");
      m.payload = r.long("payload");
      f = m;
      break;
    }
    case 0x83: {
      flagsAllowed(name, flags, 0x03);
      if ((flags & 0x03) === 0x03) {
        throw new CodecError("InvalidValue", "PUBLISH_ACK: both refused and duplicate");
      }
      const ackId = r.u64("ack id");
      f =
        flags & 0x01
          ? {
              type: "PUBLISH_ACK",
              ackId,
              result: { kind: "refused", code: r.u16("code"), message: r.short("message") },
            }
          : {
              type: "PUBLISH_ACK",
              ackId,
              result: {
                kind: "stored",
                shard: r.u16("shard"),
                sequence: r.u64("sequence"),
                duplicate: (flags & 0x02) !== 0,
              },
            };
      break;
    }
    case 0x84: {
      flagsAllowed(name, flags, 0x03);
      const e: ErrorFrame = {
        type: "ERROR",
        code: r.u16("code"),
        fatal: (flags & 0x01) !== 0,
        message: "",
      };
      if (flags & 0x02) e.sid = r.u32("sid");
      e.message = r.short("message");
      f = e;
      break;
    }
    case 0x85: {
      flagsAllowed(name, flags, 0);
      const sid = r.u32("sid");
      const dropped = r.u64("dropped");
      const n = r.u16("range count");
      const ranges: SequenceRange[] = [];
      for (let i = 0; i < n; i++) {
        const range = { shard: r.u16("shard"), first: r.u64("first"), last: r.u64("last") };
        if (range.first > range.last) {
          throw new CodecError("InvalidValue", "DROP_NOTICE: range with first > last");
        }
        ranges.push(range);
      }
      f = { type: "DROP_NOTICE", sid, dropped, ranges };
      break;
    }
    case 0x86:
      flagsAllowed(name, flags, 0);
      f = {
        type: "GAP_NOTICE",
        sid: r.u32("sid"),
        shard: r.u16("shard"),
        requested: r.u64("requested"),
        oldest: r.u64("oldest"),
      };
      break;
    case 0x87:
      flagsAllowed(name, flags, 0);
      f = { type: "GOAWAY", closeWithinMs: r.u32("close within"), reason: r.short("reason") };
      break;
    case 0x88: {
      flagsAllowed(name, flags, 0);
      const sid = r.u32("sid");
      const epoch = r.u64("epoch");
      const n = r.u16("shard count");
      const lastSequences: bigint[] = [];
      for (let i = 0; i < n; i++) lastSequences.push(r.u64("last sequence"));
      f = { type: "SUBSCRIBED", sid, epoch, lastSequences };
      break;
    }
    case 0x89:
      flagsAllowed(name, flags, 0);
      f = { type: "CHALLENGE", nonce: r.short("nonce") };
      break;
    default: {
      flagsAllowed(name, flags, 0x03);
      const id = r.u32("id");
      const kind = r.u8("kind");
      const count = r.u32("count");
      let body: PresenceBody;
      switch (kind) {
        case 0:
          body = { kind: "join", member: decodeMember(r) };
          break;
        case 1:
          body = { kind: "leave", user: r.short("user") };
          break;
        case 2:
          body = { kind: "joined", user: r.short("user"), memberToken: r.shortBytes("token") };
          break;
        case 3:
        case 4:
          body = {
            kind: kind === 3 ? "snapshot" : "page",
            offset: r.u32("offset"),
            members: decodeMembers(r),
          };
          break;
        case 5:
          body = { kind: "refused", code: r.u16("code"), message: r.short("message") };
          break;
        default:
          throw new CodecError("InvalidValue", `PRESENCE: unknown kind ${kind}`);
      }
      f = {
        type: "PRESENCE",
        id,
        query: (flags & 0x01) !== 0,
        more: (flags & 0x02) !== 0,
        count,
        body,
      };
    }
  }
  r.end();
  return f;
}

/**
 * Splits a byte stream into frames: push what arrives, take frames with `next()` until it
 * returns undefined. Holds at most one partial frame (4 + `maxFrame` bytes) beyond what was
 * pushed; an over-long `length` is refused from its 4-byte header alone. After a throw the
 * stream cannot be trusted: discard the decoder.
 */
class FrameSplitter {
  #buf: Uint8Array = new Uint8Array(0);
  #start = 0;
  #end = 0;
  constructor(public maxFrame: number) {}

  /**
   * Takes a chunk read from the connection, and owns it: the caller must not change it
   * afterwards. Memory a frame was handed out from is never written again (a chunk that
   * completes a frame left over from the last one is joined to it in a new buffer), so
   * decoded fields can be views of it rather than copies: a payload holds on to the
   * read it came in (at most one socket read or WebSocket message).
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const held = this.#end - this.#start;
    if (held === 0) {
      this.#buf = chunk;
      this.#start = 0;
      this.#end = chunk.length;
      return;
    }
    const joined = new Uint8Array(held + chunk.length);
    joined.set(this.#buf.subarray(this.#start, this.#end), 0);
    joined.set(chunk, held);
    this.#buf = joined;
    this.#start = 0;
    this.#end = joined.length;
  }

  /** Bytes held that are not yet part of a returned frame. */
  get pending(): number {
    return this.#end - this.#start;
  }

  /** The next frame's type, flags and body, or undefined when more bytes are needed. */
  nextRaw(): { type: number; flags: number; body: Uint8Array } | undefined {
    const avail = this.#end - this.#start;
    if (avail < 4) return undefined;
    const b = this.#buf;
    const s = this.#start;
    const len = ((b[s]! << 24) >>> 0) + (b[s + 1]! << 16) + (b[s + 2]! << 8) + b[s + 3]!;
    if (len < 2) {
      throw new CodecError("FrameTooShort", `frame length ${len} < 2`);
    }
    if (len > this.maxFrame) {
      throw new CodecError("FrameTooLarge", `frame length ${len} over the limit ${this.maxFrame}`);
    }
    if (avail < 4 + len) return undefined;
    const type = b[s + 4]!;
    const flags = b[s + 5]!;
    const body = b.subarray(s + 6, s + 4 + len);
    this.#start += 4 + len;
    if (this.#start === this.#end) {
      this.#buf = new Uint8Array(0);
      this.#start = 0;
      this.#end = 0;
    }
    return { type, flags, body };
  }
}

/** Decodes what a server sends. */
export class ServerFrameDecoder {
  #split: FrameSplitter;
  constructor(maxFrame: number = DEFAULT_LIMITS.maxFrame) {
    this.#split = new FrameSplitter(maxFrame);
  }
  push(chunk: Uint8Array): void {
    this.#split.push(chunk);
  }
  get pending(): number {
    return this.#split.pending;
  }
  /** The largest frame `length` accepted from now on. */
  get maxFrame(): number {
    return this.#split.maxFrame;
  }
  set maxFrame(max: number) {
    this.#split.maxFrame = max;
  }
  next(): ServerFrame | undefined {
    const raw = this.#split.nextRaw();
    return raw && decodeServerBody(raw.type, raw.flags, raw.body);
  }
}

/**
 * Decodes what a client sends, with the content checks a server applies: a sound frame
 * whose content is refused throws `CodecError` kind "Refused" (not fatal: the next frame
 * can be read).
 */
export class ClientFrameDecoder {
  #split: FrameSplitter;
  constructor(readonly limits: Limits = DEFAULT_LIMITS) {
    this.#split = new FrameSplitter(limits.maxFrame);
  }
  push(chunk: Uint8Array): void {
    this.#split.push(chunk);
  }
  next(): ClientFrame | undefined {
    const raw = this.#split.nextRaw();
    if (raw === undefined) return undefined;
    const f = decodeClientBody(raw.type, raw.flags, raw.body);
    checkClientFrame(f, this.limits);
    return f;
  }
}

/**
 * Decodes a preface from the start of `bytes`: undefined while fewer than 8 bytes are
 * there (a wrong magic byte is refused as soon as it arrives).
 */
export function decodePreface(bytes: Uint8Array): Preface | undefined {
  for (let i = 0; i < Math.min(4, bytes.length); i++) {
    if (bytes[i] !== MAGIC[i]) throw new CodecError("BadMagic", "not a Tern preface");
  }
  if (bytes.length < 8) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { minVersion: v.getUint16(4), maxVersion: v.getUint16(6) };
}

// ---------------------------------------------------------------------------------------
// Content checks (shared with the client, which checks before sending)

/** Why a subject or filter is invalid, or undefined when it is valid. */
export function subjectError(
  subject: string,
  wildcards: boolean,
  maxTokens: number = DEFAULT_LIMITS.maxSubjectTokens,
): string | undefined {
  if (subject.length === 0) return "subject is empty";
  const tokens = subject.split(".");
  let wildcardError: string | undefined;
  for (let i = 0; i < tokens.length; i++) {
    if (i === maxTokens) return `subject has too many tokens (max ${maxTokens})`;
    const t = tokens[i]!;
    if (t.length === 0) return "subject has an empty token";
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u0020\u007f]/.test(t)) {
      return "subject contains whitespace or a control character";
    }
    if (wildcardError === undefined) {
      if ((t === "*" || t === ">") && !wildcards) {
        wildcardError = "publish subject contains a wildcard token";
      } else if (t === ">" && i < tokens.length - 1) {
        wildcardError = "'>' is only allowed as the last token";
      }
    }
  }
  return wildcardError;
}

const NATS_HEADER = encoder.encode("NATS/1.0");

/** True when a header block starts with `NATS/1.0`. */
export function validHeaderBlock(h: Uint8Array): boolean {
  return h.length >= NATS_HEADER.length && NATS_HEADER.every((b, i) => h[i] === b);
}

function refuse(code: number, message: string, sid?: number, ackId?: bigint): never {
  throw new CodecError("Refused", message, code, sid, ackId);
}

/** The server's content checks of a decoded client frame, in its order. */
export function checkClientFrame(f: ClientFrame, limits: Limits = DEFAULT_LIMITS): void {
  if (f.type === "PUBLISH") {
    const size = f.payload.length + (f.headers?.length ?? 0);
    if (size > limits.maxPayload) {
      refuse(ErrorCode.PayloadTooLarge, `payload too large: ${size}`, undefined, f.ackId);
    }
    const s = subjectError(f.subject, false, limits.maxSubjectTokens);
    if (s !== undefined)
      refuse(ErrorCode.InvalidSubject, `invalid subject: ${s}`, undefined, f.ackId);
    if (f.reply !== undefined) {
      const r = subjectError(f.reply, false, limits.maxSubjectTokens);
      if (r !== undefined) {
        refuse(ErrorCode.InvalidSubject, `invalid reply subject: ${r}`, undefined, f.ackId);
      }
    }
    if (f.priority > 7) {
      refuse(
        ErrorCode.InvalidPriority,
        `invalid priority ${f.priority} (0..=7)`,
        undefined,
        f.ackId,
      );
    }
    if (f.headers !== undefined && !validHeaderBlock(f.headers)) {
      refuse(
        ErrorCode.InvalidHeaders,
        "header block does not start with NATS/1.0",
        undefined,
        f.ackId,
      );
    }
    if (f.messageId === "") refuse(ErrorCode.InvalidOption, "empty message id", undefined, f.ackId);
    if (f.coalescingKey === "") {
      refuse(ErrorCode.InvalidOption, "empty coalescing key", undefined, f.ackId);
    }
  } else if (f.type === "SUBSCRIBE") {
    const s = subjectError(f.subject, true, limits.maxSubjectTokens);
    if (s !== undefined)
      refuse(ErrorCode.InvalidSubject, `invalid subscription subject: ${s}`, f.sid);
    if (f.queue !== undefined) {
      const q = subjectError(f.queue, false, limits.maxSubjectTokens);
      if (q !== undefined) refuse(ErrorCode.InvalidSubject, `invalid queue group: ${q}`, f.sid);
    }
  }
}
