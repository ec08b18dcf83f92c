// The client: `connect(options)` gives a `Client` that keeps one connection to a broker
// (handshake, heartbeats, reconnection with backoff and full jitter, resubscription from
// resume tokens before the offline buffer is flushed, acknowledged publishes with a message
// id that a lost connection did not acknowledge first in it) and offers publish, acknowledged
// publish, subscribe, request/reply, presence, flush, drain and close.
//
// Owns: the connection's life and every piece of state that must survive a reconnection
// (subscriptions, pending acks, the offline buffer, presence member tokens). Must never
// block on the application (full queues drop and count, and say so in events), hold more
// than the bounds it was given, wait without a timeout, or swallow an error: each one is
// a rejected promise, an ended iteration, or an `error` event.

import { backoffDelay, type ReconnectPolicy } from "./backoff.js";
import {
  CodecError,
  DEFAULT_LIMITS,
  ErrorCode,
  PROTOCOL_VERSION,
  ServerFrameDecoder,
  encodeClientFrame,
  encodePreface,
  subjectError,
  type ClientFrame,
  type Member,
  type ResumeToken,
  type SequenceRange,
  type ServerFrame,
  type StartPosition,
  type Subscribe,
  type Welcome,
} from "./codec.js";
import { TernError } from "./errors.js";
import { MsgHeaders, type HeadersInit } from "./headers.js";
import { nkeySigner, parseCreds, readCredsFile, type Creds, type NKeySigner } from "./nkey.js";
import { BoundedQueue } from "./queue.js";
import {
  Msg,
  Subscription,
  type PresenceEvent,
  type Responder,
  type SubscriptionCallback,
} from "./subscription.js";
import {
  openTransport,
  parseServer,
  type ServerAddress,
  type TlsOptions,
  type Transport,
  type WebSocketConstructor,
} from "./transport.js";

export const CLIENT_VERSION = "tern-client-js/0.1.0";

export interface ConnectOptions {
  /** `tern://host:port` (TCP, Node), `tls://host:port`, `ws://host:port/tern`, `wss://...`. */
  servers: string | string[];
  /** The client's name, shown in monitoring. */
  name?: string;
  /** Receive the messages this connection publishes (default true). */
  echo?: boolean;
  /**
   * A token for the broker (`auth_token`, or a JWT). One that expires is replaced with
   * `client.refreshToken(token)`, which every later (re)connection then uses.
   */
  token?: string;
  user?: string;
  pass?: string;
  /** A user nkey seed (`SU...`): the broker's CHALLENGE is signed with it. */
  nkeySeed?: string;
  /**
   * A NATS `.creds` file's path (Node only): its seed answers the CHALLENGE as `nkeySeed`
   * would, its JWT (if any, and no `token` is given) goes along as the token.
   */
  credsFile?: string;
  /** The text of a `.creds` file, where there are no files (browsers): as `credsFile`. */
  creds?: string;
  /** TLS settings (Node): for `tls://` (turned on for `tern://` too when given) and `wss://`. */
  tls?: TlsOptions;
  /** A WebSocket class, when the platform has none (Node 20 without `ws` installed). */
  WebSocket?: WebSocketConstructor;
  /** Reconnection (default: on, 100 ms base, 5 s cap, forever); false: never reconnect. */
  reconnect?: ReconnectPolicy | false;
  /** PING after this long without receiving anything (default 10 s). */
  pingIntervalMs?: number;
  /** The connection is dead after this long without receiving anything (default 30 s). */
  serverTimeoutMs?: number;
  /** One connection attempt with its handshake (default 5 s). */
  connectTimeoutMs?: number;
  /**
   * Publishes (and presence queries) kept while disconnected or while the socket is backed
   * up past `writeBufferBytes` (default 8 MiB): one that does not fit throws
   * `OfflineBufferFull` and is not sent.
   */
  offlineBufferBytes?: number;
  /** Bytes the socket may hold before publishes wait in the offline buffer (default 8 MiB). */
  writeBufferBytes?: number;
  /** How long `publishAcked` waits (default 10 s). */
  ackTimeoutMs?: number;
  /** Default `request` timeout (default 5 s). */
  requestTimeoutMs?: number;
  /**
   * Messages queued per subscription in the client (default 65 536). Past it a message is
   * dropped and reported, except on a lossless subscription: see `heldBytes`.
   */
  subscriptionCapacity?: number;
  /**
   * A lossless subscription whose queue is full holds the connection: nothing more is
   * read until the application has taken half the queue (the broker serves the
   * subscription from its log meanwhile, and the client pings it so that it is not taken
   * for dead). Where the socket cannot stop reading (a browser's WebSocket), data keeps
   * arriving: past this many bytes of it (default 8 MiB) the client closes the
   * connection, waits for that room, and reconnects, resuming every subscription from its
   * token, so that nothing is lost either way.
   */
  heldBytes?: number;
  /** Presence events queued per subscription (default 1024). */
  presenceCapacity?: number;
  /** Events queued per `events()` iterator (default 1024; the oldest go, counted in `lost`). */
  eventCapacity?: number;
}

export interface PublishOptions {
  /** 0 (lowest, default) to 7: higher priorities are dropped last. */
  priority?: number;
  headers?: HeadersInit;
  reply?: string;
  /**
   * Idempotent publishing: a repeat within the broker's dedupe window is not delivered again.
   * With `publishAcked`, it also makes the publish safe to send again: one written to a
   * connection that is lost before its ack is re-sent on the next one, and the wait goes on.
   */
  messageId?: string;
  /** Replaces a queued, undelivered message with the same key in each subscriber's queue. */
  coalescingKey?: string;
}

export interface PublishAck {
  shard: number;
  sequence: bigint;
  /** Its message id was seen within the dedupe window: this is the first copy's place. */
  duplicate: boolean;
}

export type Start =
  | "live"
  | { resume: ResumeToken }
  /** A time: a Date, or ns since the Unix epoch. */
  | { since: Date | bigint }
  | { last: number };

export interface SubscribeOptions {
  start?: Start;
  /** On broker queue overflow, fall back to the log instead of dropping. */
  lossless?: boolean;
  queue?: string;
  /** The broker-side queue bound in messages (0: the server's default). */
  maxQueueMessages?: number;
  /** The broker-side queue bound in bytes (0: the server's default). */
  maxQueueBytes?: number;
  /** Join the room (the subject must be literal) with this info, shown to others. */
  presence?: string | Uint8Array;
  /** Receive the room's presence: a snapshot, then joins and leaves. */
  presenceEvents?: boolean;
  /** Messages queued in the client (default: the client's `subscriptionCapacity`). */
  capacity?: number;
  /**
   * Hand each message to this function as it is decoded, in order, instead of queueing it
   * for `next()` / `for await` (which then throw InvalidOption): no client queue (so no
   * client-side drops, and `capacity` does not apply) and no promise per message. Called
   * with `(undefined, msg)` per message, and once with `(error, undefined)` if the
   * subscription ends with an error (the broker refused it). It runs inside the client's
   * read of the socket: a slow callback holds up the connection (and the broker's queue
   * for it fills, then drops, as for any slow subscriber). What it throws is rethrown on
   * its own (as a listener's error is) and does not stop the subscription.
   */
  callback?: SubscriptionCallback;
}

export interface RequestOptions {
  timeoutMs?: number;
  headers?: HeadersInit;
  priority?: number;
}

export interface PresencePage {
  count: number;
  offset: number;
  members: Member[];
}

export interface ServerInfo {
  server: string;
  version: number;
  shardCount: number;
  maxPayload: number;
  maxFrame: number;
  pingIntervalMs: number;
  clientId: bigint;
  logEpoch: bigint;
  serverId: string;
}

export type ClientEvent =
  | { type: "connected"; info: ServerInfo; reconnect: boolean }
  | { type: "disconnected"; server: string; reason: DisconnectReason; error?: Error }
  | { type: "reconnecting"; attempt: number; delayMs: number; error?: Error }
  /** After a reconnection: every subscription resent (from its resume token), then the offline buffer. */
  | { type: "resumed"; subscriptions: number; offlineFrames: number }
  | {
      type: "dropNotice";
      sid: number;
      subject: string;
      count: bigint;
      ranges: SequenceRange[];
      /** The broker's queue (DROP_NOTICE), or the client's full subscription queue. */
      source: "server" | "client";
    }
  | {
      type: "gapNotice";
      sid: number;
      subject: string;
      shard: number;
      requested: bigint;
      oldest: bigint;
    }
  | { type: "epochMismatch"; sid: number; subject: string; message: string }
  | { type: "goAway"; closeWithinMs: number; reason: string }
  | { type: "error"; error: TernError; sid?: number }
  | { type: "closed"; error?: Error };

export type DisconnectReason =
  | "serverClosed"
  | "heartbeatTimeout"
  | "serverError"
  | "protocol"
  | "io"
  | "goingAway"
  /** A full lossless subscription held more than `heldBytes` on a socket that cannot pause. */
  | "held";

type EventOf<T extends ClientEvent["type"]> = Extract<ClientEvent, { type: T }>;

type MessageFrame = Extract<ServerFrame, { type: "MESSAGE" }>;

/** An `events()` iterator: `lost` counts events discarded because it was full. */
export interface EventStream extends AsyncIterable<ClientEvent> {
  next(timeoutMs?: number): Promise<ClientEvent>;
  readonly lost: number;
  /** Stops receiving events. */
  close(): void;
}

interface Entry {
  sub: Subscription;
  subject: string;
  queue: string | undefined;
  lossless: boolean;
  maxQueueMessages: number;
  maxQueueBytes: number;
  start: StartPosition;
  presenceInfo: Uint8Array | undefined;
  presenceEvents: boolean;
  memberToken: Uint8Array | undefined;
  /** Deliveries still to make (unsubscribe after N). */
  remaining: number | undefined;
  /** The members of a snapshot arriving in several frames. */
  snapshot: Member[] | undefined;
  inbox: boolean;
}

interface OutFrame {
  bytes: Uint8Array;
  /** Control frames are regenerated from state on reconnection; the rest wait offline. */
  control: boolean;
  ackId?: bigint;
  queryId?: number;
}

interface Pending<T> {
  ok: (v: T) => void;
  fail: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
  /** The connection it was written to (0: not yet written). */
  written: number;
}

interface PendingAck extends Pending<PublishAck> {
  /** Its frame, when it carries a message id: sent again if the connection it was written
   * to is lost before its ack (the broker deduplicates by message id). */
  resend?: OutFrame;
}

interface Query extends Pending<PresencePage> {
  members: Member[];
  offset: number | undefined;
}

class Conn {
  stage: "handshake" | "ready" = "handshake";
  transport!: Transport;
  decoder = new ServerFrameDecoder(DEFAULT_LIMITS.maxFrame);
  welcome: Welcome | undefined;
  lastRead = Date.now();
  lastPing = Date.now();
  /** One entry per PING sent: a flush waiting for its PONG, or null for a heartbeat. */
  pongs: (Pending<void> | null)[] = [];
  goAwayDeadline: number | undefined;
  /** WELCOME came: the frames behind it wait until the connection is set up; or `held`. */
  paused = false;
  /**
   * A message for a full lossless subscription: it, and everything after it, waits until
   * the application has made room (`#hold`); `pings` keeps the broker from taking the
   * silence for a dead client meanwhile.
   */
  held:
    { frame: MessageFrame; sub: Subscription; pings: ReturnType<typeof setInterval> } | undefined;
  /** The transport ended (before the handshake was done, or after). */
  ended = false;
  /** Why it ended, when the client or the server said before it did. */
  failure: { reason: DisconnectReason; error?: Error } | undefined;
  /** The token its `HELLO` carried: a refresh since then is sent in an `AUTH` after `WELCOME`. */
  helloToken: string | undefined;
  handshake!: { ok: () => void; fail: (e: Error) => void };
  constructor(
    readonly gen: number,
    readonly server: ServerAddress,
  ) {}
}

const textEncoder = new TextEncoder();

function toBytes(payload: Uint8Array | string): Uint8Array {
  return typeof payload === "string" ? textEncoder.encode(payload) : payload;
}

function randomToken(n: number): string {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  const bytes = new Uint8Array(n);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

function sleep(ms: number, cancel: AbortSignal): Promise<void> {
  return new Promise((ok) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      cancel.removeEventListener("abort", done);
      ok();
    }
    cancel.addEventListener("abort", done);
  });
}

/** Connects to the first server that answers (each is tried once; no retry on the first connection). */
export async function connect(options: ConnectOptions): Promise<Client> {
  const client = new Client(options);
  await client._start();
  return client;
}

export class Client {
  readonly #opts: Required<
    Omit<
      ConnectOptions,
      | "token"
      | "user"
      | "pass"
      | "nkeySeed"
      | "credsFile"
      | "creds"
      | "tls"
      | "WebSocket"
      | "reconnect"
      | "servers"
    >
  >;
  readonly #options: ConnectOptions;
  readonly #servers: ServerAddress[];
  readonly #policy: ReconnectPolicy;
  #signer: NKeySigner | undefined;
  /** The latest token (the option's, a `.creds` file's JWT, or the last refresh's). */
  #token: string | undefined;
  #conn: Conn | undefined;
  #gen = 0;
  #serverIndex = 0;
  #state: "connecting" | "connected" | "reconnecting" | "draining" | "closed" = "connecting";
  readonly #stop = new AbortController();
  #info: ServerInfo | undefined;

  readonly #entries = new Map<number, Entry>();
  #nextSid = 1;
  readonly #outbox: OutFrame[] = [];
  #outboxBytes = 0;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #acks = new Map<bigint, PendingAck>();
  #nextAck = 1n;
  readonly #queries = new Map<number, Query>();
  #nextQuery = 1;
  readonly #requests = new Map<string, Pending<Msg>>();
  #nextRequest = 1;
  readonly #inboxPrefix = `_INBOX.${randomToken(22)}`;
  #inboxSid: number | undefined;
  /** Flushes waiting for a connection. */
  readonly #connectedWaiters = new Set<() => void>();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  readonly #listeners = new Map<string, Set<(e: ClientEvent) => void>>();
  /** How a delivered message answers (one for every message, not one made per message). */
  readonly #responder: Responder = {
    publish: (subject, payload, options) => this.publish(subject, payload, options ?? {}),
  };
  readonly #streams = new Set<{ queue: BoundedQueue<ClientEvent>; lost: number }>();
  readonly #closedPromise: Promise<Error | undefined>;
  #closedOk!: (e: Error | undefined) => void;

  /** Use `connect()`. */
  constructor(options: ConnectOptions) {
    this.#options = options;
    const list = typeof options.servers === "string" ? [options.servers] : options.servers;
    if (list.length === 0) throw new TernError("InvalidOption", "no servers given");
    this.#servers = list.map(parseServer);
    this.#policy =
      options.reconnect === false ? { enabled: false } : { enabled: true, ...options.reconnect };
    this.#opts = {
      name: options.name ?? "",
      echo: options.echo ?? true,
      pingIntervalMs: options.pingIntervalMs ?? 10_000,
      serverTimeoutMs: options.serverTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      offlineBufferBytes: options.offlineBufferBytes ?? 8 << 20,
      writeBufferBytes: options.writeBufferBytes ?? 8 << 20,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
      subscriptionCapacity: options.subscriptionCapacity ?? 65_536,
      heldBytes: options.heldBytes ?? 8 << 20,
      presenceCapacity: options.presenceCapacity ?? 1024,
      eventCapacity: options.eventCapacity ?? 1024,
    };
    if ((options.user === undefined) !== (options.pass === undefined)) {
      throw new TernError("InvalidOption", "user and pass go together");
    }
    const nkeys = [options.nkeySeed, options.credsFile, options.creds].filter(
      (o) => o !== undefined,
    );
    if (nkeys.length > 1) {
      throw new TernError("InvalidOption", "one of nkeySeed, credsFile and creds, not several");
    }
    this.#token = options.token;
    this.#closedPromise = new Promise((ok) => (this.#closedOk = ok));
  }

  /** @internal The first connection: every server once, in order. */
  async _start(): Promise<void> {
    const o = this.#options;
    let creds: Creds | undefined;
    if (o.credsFile !== undefined) creds = await readCredsFile(o.credsFile);
    else if (o.creds !== undefined) creds = parseCreds(o.creds);
    if (creds) {
      const origin = o.credsFile === undefined ? "creds" : `credentials file ${o.credsFile}`;
      this.#signer = await nkeySigner(creds.seed, origin);
      this.#token ??= creds.jwt;
    } else if (o.nkeySeed !== undefined) {
      this.#signer = await nkeySigner(o.nkeySeed);
    }
    let last: Error | undefined;
    for (let i = 0; i < this.#servers.length; i++) {
      const server = this.#servers[(this.#serverIndex = i)]!;
      try {
        const conn = await this.#handshake(server);
        this.#ready(conn, false);
        this.#heartbeat = setInterval(
          () => this.#tick(),
          Math.max(50, Math.min(1000, this.#opts.pingIntervalMs / 2)),
        );
        return;
      } catch (e) {
        last = e as Error;
        if (e instanceof TernError && e.kind === "Server") break; // a fatal ERROR: retrying would not help
      }
    }
    this.#state = "closed";
    this.#stop.abort();
    this.#closedOk(last);
    if (last instanceof TernError && last.kind === "Server") throw last;
    throw new TernError(
      "Connect",
      `cannot connect to ${this.#servers.map((s) => s.text).join(", ")}: ${last?.message}`,
      undefined,
      { cause: last },
    );
  }

  // -------------------------------------------------------------------------------------
  // Public API

  /** The server of the current connection (undefined while disconnected). */
  get info(): ServerInfo | undefined {
    return this.#conn?.stage === "ready" ? this.#info : undefined;
  }

  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Resolves when the client has closed, with the error that closed it, if any. */
  get closed(): Promise<Error | undefined> {
    return this.#closedPromise;
  }

  /** Bytes waiting in the offline buffer. */
  get offlineBytes(): number {
    return this.#outboxBytes;
  }

  /** Publishes a message (fire-and-forget). Throws on invalid input or a full offline buffer. */
  publish(
    subject: string,
    payload: Uint8Array | string = new Uint8Array(0),
    options: PublishOptions = {},
  ): void {
    this.#publish(subject, toBytes(payload), options, undefined);
  }

  /**
   * Publishes and resolves with where the broker stored it; a refusal rejects with `Refused`
   * and its code, no ack within `ackTimeoutMs` with `Timeout`.
   *
   * Written to a connection that is then lost before its ack: with a `messageId`, it is sent
   * again on the next connection (right after the resubscriptions, ahead of what was published
   * since, in the order such publishes were written) and the wait goes on; the broker
   * deduplicates by message id, so if the first copy got there the ack says `duplicate` and
   * nothing is stored or delivered twice (within its dedupe window; not with `--no-store`).
   * Re-sent publishes count against `offlineBufferBytes`: those that do not fit reject with
   * `Disconnected`. Without a `messageId` it rejects with `Disconnected` (the outcome is unknown).
   */
  publishAcked(
    subject: string,
    payload: Uint8Array | string = new Uint8Array(0),
    options: PublishOptions = {},
  ): Promise<PublishAck> {
    const ackId = this.#nextAck++;
    return new Promise<PublishAck>((ok, fail) => {
      const timer = setTimeout(() => {
        this.#acks.delete(ackId);
        fail(new TernError("Timeout", `no PUBLISH_ACK within ${this.#opts.ackTimeoutMs} ms`));
      }, this.#opts.ackTimeoutMs);
      const pending: PendingAck = { ok, fail, timer, written: 0 };
      this.#acks.set(ackId, pending);
      try {
        const frame = this.#publish(subject, toBytes(payload), options, ackId);
        if (options.messageId !== undefined) pending.resend = frame;
      } catch (e) {
        clearTimeout(timer);
        this.#acks.delete(ackId);
        fail(e);
      }
    });
  }

  /** Subscribes; the subscription is an async iterable of messages. */
  subscribe(subject: string, options: SubscribeOptions = {}): Subscription {
    this.#checkOpen();
    if (this.#state === "draining") throw new TernError("Closed", "the client is draining");
    const bad = subjectError(subject, true);
    if (bad)
      throw new TernError("InvalidSubject", `invalid subject ${JSON.stringify(subject)}: ${bad}`);
    if (options.queue !== undefined) {
      const q = subjectError(options.queue, false);
      if (q)
        throw new TernError(
          "InvalidSubject",
          `invalid queue group ${JSON.stringify(options.queue)}: ${q}`,
        );
      if (options.lossless)
        throw new TernError("InvalidOption", "a lossless subscription cannot have a queue group");
    }
    const presence = options.presence !== undefined || options.presenceEvents === true;
    if (presence && (subjectError(subject, false) || options.queue !== undefined)) {
      throw new TernError(
        "InvalidOption",
        "presence needs a room: a literal subject, no queue group",
      );
    }
    if (options.callback !== undefined && typeof options.callback !== "function")
      throw new TernError("InvalidOption", "callback is not a function");
    const start = this.#startPosition(options.start ?? "live");
    for (const n of [options.maxQueueMessages, options.maxQueueBytes]) {
      if (n !== undefined && (!Number.isInteger(n) || n < 0 || n > 0xffffffff)) {
        throw new TernError("InvalidOption", `queue bound ${n} is not a u32`);
      }
    }
    return this.#addEntry(subject, {
      queue: options.queue,
      lossless: options.lossless ?? false,
      maxQueueMessages: options.maxQueueMessages ?? 0,
      maxQueueBytes: options.maxQueueBytes ?? 0,
      start,
      presenceInfo: options.presence === undefined ? undefined : toBytes(options.presence),
      presenceEvents: options.presenceEvents ?? false,
      capacity: options.capacity ?? this.#opts.subscriptionCapacity,
      presence,
      inbox: false,
      callback: options.callback,
    });
  }

  /** Publishes a request and resolves with the first reply. */
  async request(
    subject: string,
    payload: Uint8Array | string = new Uint8Array(0),
    options: RequestOptions = {},
  ): Promise<Msg> {
    this.#checkOpen();
    if (this.#inboxSid === undefined) {
      this.#inboxSid = this.#addEntry(`${this.#inboxPrefix}.*`, {
        queue: undefined,
        lossless: false,
        maxQueueMessages: 0,
        maxQueueBytes: 0,
        start: { mode: "live" },
        presenceInfo: undefined,
        presenceEvents: false,
        capacity: 1,
        presence: false,
        inbox: true,
      }).sid;
    }
    const token = String(this.#nextRequest++);
    const timeoutMs = options.timeoutMs ?? this.#opts.requestTimeoutMs;
    const reply = new Promise<Msg>((ok, fail) => {
      const timer = setTimeout(() => {
        this.#requests.delete(token);
        fail(new TernError("Timeout", `no reply to ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#requests.set(token, { ok, fail, timer, written: 0 });
    });
    try {
      this.#publish(
        subject,
        toBytes(payload),
        { ...options, reply: `${this.#inboxPrefix}.${token}` },
        undefined,
      );
    } catch (e) {
      const p = this.#requests.get(token);
      if (p) {
        clearTimeout(p.timer);
        this.#requests.delete(token);
      }
      reply.catch(() => undefined);
      throw e;
    }
    const msg = await reply;
    if (msg.isNoResponders) throw new TernError("NoResponders", `no responders on ${subject}`);
    return msg;
  }

  /** Who is in a room (a page of members in join order). */
  presence(
    room: string,
    options: { offset?: number; limit?: number; timeoutMs?: number } = {},
  ): Promise<PresencePage> {
    return this.#query(room, options.offset ?? 0, options.limit ?? 100, false, options.timeoutMs);
  }

  /** How many are in a room. */
  async presenceCount(room: string, options: { timeoutMs?: number } = {}): Promise<number> {
    return (await this.#query(room, 0, 0, true, options.timeoutMs)).count;
  }

  /**
   * Replaces the token (e.g. a JWT about to expire): sends it now in an `AUTH` frame when
   * connected, and every later (re)connection's `HELLO` carries it. Resolves once the
   * broker has taken it (a `PING` barrier behind the `AUTH`; while disconnected, once a
   * connection made with it is up), within `timeoutMs`. A broker that refuses it ends the
   * connection with a fatal `AuthorizationViolation`: the promise rejects with that error
   * (kind `Server`), and the reconnections go on trying the new token, so a later refresh
   * can still put things right.
   */
  async refreshToken(token: string, timeoutMs = 5_000): Promise<void> {
    this.#checkOpen();
    if (typeof token !== "string" || token === "")
      throw new TernError("InvalidOption", "refreshToken needs a non-empty token");
    // The token first: a HELLO built from now on carries it.
    this.#token = token;
    const conn = this.#conn;
    if (conn?.stage === "ready") this.#sendAuth(conn);
    try {
      await this.flush(timeoutMs);
    } catch (e) {
      // The connection lost to a refusal: the broker's error says why, not the flush's.
      const cause = e instanceof TernError ? e.cause : undefined;
      if (cause instanceof TernError && cause.kind === "Server") throw cause;
      throw e;
    }
  }

  /**
   * A PING/PONG barrier: resolves once the broker has processed everything sent before
   * (waits for a connection, within the timeout, when disconnected).
   */
  async flush(timeoutMs = 5_000): Promise<void> {
    this.#checkOpen();
    const deadline = Date.now() + timeoutMs;
    if (this.#conn?.stage !== "ready") await this.#whenConnected(timeoutMs);
    await this.#drainOutbox(deadline);
    const conn = this.#conn;
    if (!conn) throw new TernError("Disconnected", "the connection was lost during the flush");
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(
        () => {
          const i = conn.pongs.indexOf(pending);
          if (i >= 0) conn.pongs[i] = null;
          fail(new TernError("Timeout", `no PONG within ${timeoutMs} ms`));
        },
        Math.max(0, deadline - Date.now()),
      );
      const pending: Pending<void> = { ok, fail, timer, written: conn.gen };
      conn.pongs.push(pending);
      conn.transport.write(encodeClientFrame({ type: "PING" }));
      conn.lastPing = Date.now();
    });
  }

  /**
   * Unsubscribes everything, flushes, ends the subscriptions (queued messages stay
   * readable), waits for outstanding acks, and closes.
   */
  async drain(timeoutMs = 5_000): Promise<void> {
    if (this.#state === "closed") return;
    const deadline = Date.now() + timeoutMs;
    this.#state = "draining";
    // UNSUBSCRIBE everything, behind what was already sent: the broker routes nothing more
    // to those sids but still delivers what it routed to them before, this connection's own
    // earlier publishes included, all ahead of the PONG of the barrier that follows. The
    // entries stay until that PONG so those messages are taken; then the subscriptions end.
    let error: Error | undefined;
    try {
      if (this.#conn?.stage === "ready") {
        for (const sid of this.#entries.keys()) {
          this.#send({ bytes: encodeClientFrame({ type: "UNSUBSCRIBE", sid }), control: true });
        }
        await this.flush(Math.max(1, deadline - Date.now()));
      }
      for (const sid of [...this.#entries.keys()]) this.#removeEntry(sid, false);
      const acks = [...this.#acks.values()].map(
        (p) =>
          new Promise<void>((ok) => {
            const { ok: o, fail: f } = p;
            p.ok = (v) => (o(v), ok());
            p.fail = (e) => (f(e), ok());
          }),
      );
      const left = Math.max(1, deadline - Date.now());
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.all(acks), new Promise((ok) => (timer = setTimeout(ok, left)))]);
      clearTimeout(timer);
      if (this.#acks.size > 0)
        error = new TernError("Timeout", `drain: ${this.#acks.size} acks still outstanding`);
    } catch (e) {
      error = e as Error;
    }
    this.close();
    if (error) throw error;
  }

  /** Closes now: pending waits reject with `Closed`, subscriptions end. */
  close(): void {
    this.#shutdown(undefined);
  }

  /** Listens to one kind of event; returns the function that stops it. */
  on<T extends ClientEvent["type"]>(type: T, listener: (event: EventOf<T>) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    const l = listener as (e: ClientEvent) => void;
    set.add(l);
    return () => set.delete(l);
  }

  /** Every event from now on, as a bounded async iterator (when full, the oldest go). */
  events(): EventStream {
    const stream = { queue: new BoundedQueue<ClientEvent>(this.#opts.eventCapacity), lost: 0 };
    if (this.#state === "closed") stream.queue.end();
    else this.#streams.add(stream);
    const streams = this.#streams;
    return {
      get lost() {
        return stream.lost;
      },
      async next(timeoutMs?: number) {
        const r = await stream.queue.next(timeoutMs);
        if (r.done) throw new TernError("Closed", "the client is closed");
        return r.value;
      },
      close() {
        streams.delete(stream);
        stream.queue.end();
      },
      [Symbol.asyncIterator]: () => stream.queue[Symbol.asyncIterator](),
    };
  }

  // -------------------------------------------------------------------------------------
  // Sending

  #checkOpen(): void {
    if (this.#state === "closed") throw new TernError("Closed", "the client is closed");
  }

  #startPosition(start: Start): StartPosition {
    if (start === "live") return { mode: "live" };
    if ("resume" in start) return { mode: "resume", token: start.resume };
    if ("since" in start) {
      const t =
        start.since instanceof Date ? BigInt(start.since.getTime()) * 1_000_000n : start.since;
      return { mode: "time", time: t };
    }
    if (!Number.isInteger(start.last) || start.last < 0 || start.last > 0xffffffff) {
      throw new TernError("InvalidOption", `last ${start.last} is not a u32`);
    }
    return { mode: "lastN", n: start.last };
  }

  #publish(
    subject: string,
    payload: Uint8Array,
    o: PublishOptions,
    ackId: bigint | undefined,
  ): OutFrame {
    this.#checkOpen();
    const bad = subjectError(subject, false);
    if (bad)
      throw new TernError("InvalidSubject", `invalid subject ${JSON.stringify(subject)}: ${bad}`);
    if (o.reply !== undefined) {
      const r = subjectError(o.reply, false);
      if (r)
        throw new TernError(
          "InvalidSubject",
          `invalid reply subject ${JSON.stringify(o.reply)}: ${r}`,
        );
    }
    const priority = o.priority ?? 0;
    if (!Number.isInteger(priority) || priority < 0 || priority > 7) {
      throw new TernError("InvalidOption", `priority ${priority} is not 0..=7`);
    }
    if (o.messageId === "" || o.coalescingKey === "") {
      throw new TernError("InvalidOption", "an empty message id or coalescing key");
    }
    const headers = o.headers === undefined ? undefined : new MsgHeaders(o.headers).encode();
    const size = payload.length + (headers?.length ?? 0);
    const max = this.#info?.maxPayload ?? DEFAULT_LIMITS.maxPayload;
    if (size > max)
      throw new TernError(
        "PayloadTooLarge",
        `${size} bytes of headers and payload, the broker takes ${max}`,
      );
    let bytes: Uint8Array;
    try {
      bytes = encodeClientFrame({
        type: "PUBLISH",
        priority,
        subject,
        payload,
        ...(ackId !== undefined && { ackId }),
        ...(o.reply !== undefined && { reply: o.reply }),
        ...(o.messageId !== undefined && { messageId: o.messageId }),
        ...(o.coalescingKey !== undefined && { coalescingKey: o.coalescingKey }),
        ...(headers !== undefined && { headers }),
      });
    } catch (e) {
      throw new TernError("InvalidOption", (e as Error).message, undefined, { cause: e });
    }
    const frame: OutFrame = { bytes, control: false, ...(ackId !== undefined && { ackId }) };
    this.#send(frame);
    return frame;
  }

  /** Writes a frame now, or keeps it in the offline buffer (throws when that is full). */
  #send(frame: OutFrame): void {
    const conn = this.#conn;
    if (
      conn?.stage === "ready" &&
      this.#outbox.length === 0 &&
      conn.transport.buffered < this.#opts.writeBufferBytes
    ) {
      this.#write(conn, frame);
      return;
    }
    if (!frame.control && this.#outboxBytes + frame.bytes.length > this.#opts.offlineBufferBytes) {
      throw new TernError(
        "OfflineBufferFull",
        `offline buffer full (${this.#outboxBytes} of ${this.#opts.offlineBufferBytes} bytes held${conn?.stage === "ready" ? ", the socket is backed up" : " while disconnected"}): not sent`,
      );
    }
    if (!frame.control || conn?.stage === "ready") {
      this.#outbox.push(frame);
      this.#outboxBytes += frame.bytes.length;
    }
    if (conn?.stage === "ready") this.#scheduleFlush();
  }

  #write(conn: Conn, frame: OutFrame): void {
    if (frame.ackId !== undefined) {
      const p = this.#acks.get(frame.ackId);
      if (p) p.written = conn.gen;
    }
    if (frame.queryId !== undefined) {
      const q = this.#queries.get(frame.queryId);
      if (q) q.written = conn.gen;
    }
    conn.transport.write(frame.bytes);
  }

  /** Writes the offline buffer while the socket has room. */
  #flushOutbox(): void {
    const conn = this.#conn;
    if (conn?.stage !== "ready") return;
    while (this.#outbox.length > 0 && conn.transport.buffered < this.#opts.writeBufferBytes) {
      const f = this.#outbox.shift()!;
      this.#outboxBytes -= f.bytes.length;
      this.#write(conn, f);
    }
    if (this.#outbox.length > 0) this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== undefined) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.#flushOutbox();
    }, 5);
  }

  async #drainOutbox(deadline: number): Promise<void> {
    while (this.#outbox.length > 0) {
      if (Date.now() > deadline)
        throw new TernError("Timeout", "the offline buffer did not drain in time");
      if (this.#conn?.stage !== "ready")
        await this.#whenConnected(Math.max(1, deadline - Date.now()));
      this.#flushOutbox();
      if (this.#outbox.length > 0) await sleep(5, this.#stop.signal);
      if (this.#state === "closed") throw new TernError("Closed", "the client is closed");
    }
  }

  #whenConnected(timeoutMs: number): Promise<void> {
    return new Promise((ok, fail) => {
      const done = () => {
        clearTimeout(timer);
        this.#connectedWaiters.delete(done);
        if (this.#state === "closed") fail(new TernError("Closed", "the client is closed"));
        else ok();
      };
      const timer = setTimeout(() => {
        this.#connectedWaiters.delete(done);
        fail(new TernError("Timeout", `not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#connectedWaiters.add(done);
    });
  }

  #query(
    room: string,
    offset: number,
    limit: number,
    countOnly: boolean,
    timeoutMs = 5_000,
  ): Promise<PresencePage> {
    this.#checkOpen();
    const bad = subjectError(room, false);
    if (bad)
      return Promise.reject(
        new TernError("InvalidSubject", `invalid room ${JSON.stringify(room)}: ${bad}`),
      );
    const id = this.#nextQuery++;
    return new Promise<PresencePage>((ok, fail) => {
      const timer = setTimeout(() => {
        this.#queries.delete(id);
        fail(new TernError("Timeout", `no presence answer for ${room} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#queries.set(id, { ok, fail, timer, written: 0, members: [], offset: undefined });
      try {
        const bytes = encodeClientFrame({
          type: "PRESENCE_QUERY",
          id,
          room,
          offset,
          limit,
          countOnly,
        });
        this.#send({ bytes, control: false, queryId: id });
      } catch (e) {
        clearTimeout(timer);
        this.#queries.delete(id);
        fail(e instanceof CodecError ? new TernError("InvalidOption", e.message) : e);
      }
    });
  }

  // -------------------------------------------------------------------------------------
  // Subscriptions

  #addEntry(
    subject: string,
    o: Omit<Entry, "sub" | "subject" | "memberToken" | "remaining" | "snapshot"> & {
      capacity: number;
      presence: boolean;
      callback?: SubscriptionCallback | undefined;
    },
  ): Subscription {
    const sid = this.#nextSid++;
    const token = o.start.mode === "resume" ? o.start.token : undefined;
    const sub = new Subscription(
      sid,
      subject,
      o.queue,
      o.capacity,
      o.presence ? this.#opts.presenceCapacity : undefined,
      token,
      {
        unsubscribe: (s, max) => this.#unsubscribe(s, max),
      },
      o.callback,
    );
    const entry: Entry = {
      sub,
      subject,
      queue: o.queue,
      lossless: o.lossless,
      maxQueueMessages: o.maxQueueMessages,
      maxQueueBytes: o.maxQueueBytes,
      start: o.start,
      presenceInfo: o.presenceInfo,
      presenceEvents: o.presenceEvents,
      memberToken: undefined,
      remaining: undefined,
      snapshot: undefined,
      inbox: o.inbox,
    };
    this.#entries.set(sid, entry);
    const conn = this.#conn;
    if (conn?.stage === "ready")
      this.#send({ bytes: this.#subscribeFrame(sid, entry), control: true });
    return sub;
  }

  #subscribeFrame(sid: number, e: Entry): Uint8Array {
    const token = e.inbox ? undefined : e.sub._tracker.token();
    const frame: Subscribe = {
      type: "SUBSCRIBE",
      sid,
      maxQueueMessages: e.maxQueueMessages,
      maxQueueBytes: e.maxQueueBytes,
      subject: e.subject,
      lossless: e.lossless,
      start: token ? { mode: "resume", token } : e.start,
      presenceEvents: e.presenceEvents,
      ...(e.queue !== undefined && { queue: e.queue }),
      ...(e.presenceInfo !== undefined && {
        presence: {
          info: e.presenceInfo,
          ...(e.memberToken !== undefined && { memberToken: e.memberToken }),
        },
      }),
    };
    return encodeClientFrame(frame);
  }

  #unsubscribe(sid: number, max?: number): void {
    const e = this.#entries.get(sid);
    if (!e) return;
    if (max !== undefined && max > 0) {
      if (!Number.isInteger(max))
        throw new TernError("InvalidOption", `max ${max} is not an integer`);
      e.remaining = max;
      if (this.#conn?.stage === "ready") {
        this.#send({
          bytes: encodeClientFrame({ type: "UNSUBSCRIBE", sid, max: BigInt(max) }),
          control: true,
        });
      }
      return;
    }
    this.#removeEntry(sid, true);
  }

  #removeEntry(sid: number, tellServer: boolean, error?: unknown): void {
    const e = this.#entries.get(sid);
    if (!e) return;
    this.#entries.delete(sid);
    if (sid === this.#inboxSid) this.#inboxSid = undefined;
    if (tellServer && this.#conn?.stage === "ready") {
      this.#send({ bytes: encodeClientFrame({ type: "UNSUBSCRIBE", sid }), control: true });
    }
    e.sub._end(error);
  }

  // -------------------------------------------------------------------------------------
  // Connections

  #hello(): ClientFrame {
    const o = this.#options;
    return {
      type: "HELLO",
      name: this.#opts.name,
      version: CLIENT_VERSION,
      echo: this.#opts.echo,
      // A request nobody receives is answered at once (NoResponders), not timed out.
      noResponders: true,
      ...(this.#token !== undefined && { token: this.#token }),
      ...(o.user !== undefined && { user: o.user, pass: o.pass ?? "" }),
      ...(this.#signer !== undefined && { nkey: this.#signer.publicKey }),
    };
  }

  async #handshake(server: ServerAddress): Promise<Conn> {
    const conn = new Conn(++this.#gen, server);
    const done = new Promise<void>((ok, fail) => (conn.handshake = { ok, fail }));
    const timeout = this.#opts.connectTimeoutMs;
    const timer = setTimeout(
      () =>
        conn.handshake.fail(
          new TernError("Connect", `${server.text}: no WELCOME within ${timeout} ms`),
        ),
      timeout,
    );
    try {
      conn.transport = await openTransport(
        server,
        {
          timeoutMs: timeout,
          ...(this.#options.tls && { tls: this.#options.tls }),
          ...(this.#options.WebSocket && { WebSocket: this.#options.WebSocket }),
        },
        {
          data: (bytes) => this.#onData(conn, bytes),
          closed: (error) => this.#onClosed(conn, error),
          drained: () => this.#flushOutbox(),
        },
      );
      conn.transport.write(
        encodePreface({ minVersion: PROTOCOL_VERSION, maxVersion: PROTOCOL_VERSION }),
      );
      conn.helloToken = this.#token;
      conn.transport.write(encodeClientFrame(this.#hello()));
      await done;
      if (conn.ended) throw new TernError("Connect", `${server.text}: closed right after WELCOME`);
      return conn;
    } catch (e) {
      conn.stage = "handshake";
      conn.transport?.close();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  #ready(conn: Conn, reconnect: boolean): void {
    const w = conn.welcome!;
    conn.stage = "ready";
    conn.decoder.maxFrame = Math.max(w.maxFrame, DEFAULT_LIMITS.maxFrame);
    conn.lastRead = conn.lastPing = Date.now();
    this.#conn = conn;
    this.#state = "connected";
    this.#info = {
      server: conn.server.text,
      version: w.version,
      shardCount: w.shardCount,
      maxPayload: w.maxPayload,
      maxFrame: w.maxFrame,
      pingIntervalMs: w.pingIntervalMs,
      clientId: w.clientId,
      logEpoch: w.logEpoch,
      serverId: w.serverId,
    };
    // Control frames queued for the last connection are rebuilt from state below.
    for (let i = this.#outbox.length - 1; i >= 0; i--) {
      if (this.#outbox[i]!.control) {
        this.#outboxBytes -= this.#outbox[i]!.bytes.length;
        this.#outbox.splice(i, 1);
      }
    }
    // 0. A token refreshed after this connection's HELLO went out, before anything else.
    if (conn.helloToken !== this.#token) this.#sendAuth(conn);
    // 1. Every subscription, from its resume token (or its original start), in sid order.
    let subscriptions = 0;
    for (const [sid, e] of this.#entries) {
      e.snapshot = undefined;
      conn.transport.write(this.#subscribeFrame(sid, e));
      if (e.remaining !== undefined) {
        conn.transport.write(
          encodeClientFrame({ type: "UNSUBSCRIBE", sid, max: BigInt(e.remaining) }),
        );
      }
      subscriptions++;
    }
    // 2. Then the offline buffer, in order.
    const offlineFrames = this.#outbox.length;
    this.#flushOutbox();
    this.#emit({ type: "connected", info: this.#info, reconnect });
    if (reconnect) this.#emit({ type: "resumed", subscriptions, offlineFrames });
    for (const wake of [...this.#connectedWaiters]) wake();
    // Frames that came behind WELCOME.
    conn.paused = false;
    this.#onData(conn, new Uint8Array(0));
  }

  /** The current token in an `AUTH` (a refresh), at once: it goes ahead of the offline buffer. */
  #sendAuth(conn: Conn): void {
    if (this.#token === undefined) return;
    conn.helloToken = this.#token;
    conn.transport.write(encodeClientFrame({ type: "AUTH", token: this.#token }));
  }

  #onData(conn: Conn, bytes: Uint8Array): void {
    conn.lastRead = Date.now();
    let frame: ServerFrame | undefined;
    try {
      if (bytes.length > 0) conn.decoder.push(bytes);
      if (conn.held && conn.decoder.pending > this.#opts.heldBytes) {
        // A socket that cannot pause: rather than hold without bound, close; the client
        // reconnects once the subscription has room, everything resumed from its token.
        const error = new TernError(
          "Disconnected",
          `a lossless subscription (${conn.held.sub.subject}) was full with more than ` +
            `heldBytes (${this.#opts.heldBytes}) waiting on a connection that cannot pause`,
        );
        this.#fail(conn, "held", error);
        return;
      }
      while (!conn.paused && (frame = conn.decoder.next()) !== undefined) {
        this.#onFrame(conn, frame);
        if (conn.failure) return;
      }
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      const error = new TernError("Protocol", `${conn.server.text}: ${e.message}`, undefined, {
        cause: e,
      });
      this.#fail(conn, "protocol", error);
    }
  }

  #fail(conn: Conn, reason: DisconnectReason, error?: Error): void {
    conn.failure ??= { reason, ...(error && { error }) };
    if (conn.stage === "handshake")
      conn.handshake.fail(error ?? new TernError("Connect", `${conn.server.text}: ${reason}`));
    conn.transport?.close();
  }

  #onFrame(conn: Conn, f: ServerFrame): void {
    if (conn.stage === "handshake") {
      switch (f.type) {
        case "WELCOME":
          // What follows it (a GOAWAY, a PING) is read once the connection is set up.
          conn.welcome = f;
          conn.paused = true;
          conn.handshake.ok();
          return;
        case "CHALLENGE": {
          const signer = this.#signer;
          if (!signer) {
            this.#fail(
              conn,
              "protocol",
              new TernError("Protocol", "CHALLENGE to a HELLO without an nkey"),
            );
            return;
          }
          signer.sign(f.nonce).then(
            (signature) => conn.transport.write(encodeClientFrame({ type: "AUTH", signature })),
            (e: unknown) => this.#fail(conn, "protocol", e as Error),
          );
          return;
        }
        case "ERROR":
          this.#fail(conn, "serverError", TernError.server("Server", f.code, f.message));
          return;
        case "PING":
          conn.transport.write(encodeClientFrame({ type: "PONG" }));
          return;
        default:
          this.#fail(conn, "protocol", new TernError("Protocol", `${f.type} before WELCOME`));
          return;
      }
    }
    switch (f.type) {
      case "PING":
        conn.transport.write(encodeClientFrame({ type: "PONG" }));
        return;
      case "PONG": {
        const p = conn.pongs.shift();
        if (p) {
          clearTimeout(p.timer);
          p.ok();
        }
        return;
      }
      case "MESSAGE":
        this.#onMessage(conn, f);
        return;
      case "PUBLISH_ACK": {
        const p = this.#acks.get(f.ackId);
        if (!p) return; // timed out already
        this.#acks.delete(f.ackId);
        clearTimeout(p.timer);
        const r = f.result;
        if (r.kind === "refused") p.fail(TernError.server("Refused", r.code, r.message));
        else p.ok({ shard: r.shard, sequence: r.sequence, duplicate: r.duplicate });
        return;
      }
      case "ERROR":
        this.#onError(conn, f.code, f.fatal, f.sid, f.message);
        return;
      case "DROP_NOTICE": {
        const e = this.#entries.get(f.sid);
        if (e) e.sub.serverDropped += f.dropped;
        this.#emit({
          type: "dropNotice",
          sid: f.sid,
          subject: e?.subject ?? "",
          count: f.dropped,
          ranges: f.ranges,
          source: "server",
        });
        return;
      }
      case "GAP_NOTICE": {
        const e = this.#entries.get(f.sid);
        this.#emit({
          type: "gapNotice",
          sid: f.sid,
          subject: e?.subject ?? "",
          shard: f.shard,
          requested: f.requested,
          oldest: f.oldest,
        });
        return;
      }
      case "GOAWAY":
        conn.goAwayDeadline = Date.now() + (f.closeWithinMs || 0) + 1000;
        this.#emit({ type: "goAway", closeWithinMs: f.closeWithinMs, reason: f.reason });
        return;
      case "SUBSCRIBED": {
        const e = this.#entries.get(f.sid);
        if (e && !e.inbox) {
          e.sub._tracker.startAt(f.epoch, f.lastSequences);
          e.sub._subscribed();
        } else if (e) {
          e.sub._subscribed();
        }
        return;
      }
      case "PRESENCE":
        if (f.query) this.#onQueryAnswer(f.id, f.count, f.more, f.body);
        else this.#onPresence(f.id, f.count, f.more, f.body);
        return;
      default:
        this.#fail(conn, "protocol", new TernError("Protocol", `unexpected ${f.type}`));
    }
  }

  #onMessage(conn: Conn, f: MessageFrame): void {
    const e = this.#entries.get(f.sid);
    if (!e) return; // unsubscribed: the broker had sent it before it knew
    const msg = new Msg(
      f.subject,
      f.payload,
      f.sid,
      f.priority,
      f.shard,
      f.sequence,
      f.timestamp,
      f.replayed,
      f.reply,
      f.headers,
      this.#responder,
    );
    if (e.inbox) {
      const token = f.subject.slice(this.#inboxPrefix.length + 1);
      const p = this.#requests.get(token);
      if (p) {
        this.#requests.delete(token);
        clearTimeout(p.timer);
        p.ok(msg);
      }
      return;
    }
    if (e.lossless && e.sub._full()) {
      // Not seen yet (the tracker has not observed it): held with everything after it.
      this.#hold(conn, f, e.sub);
      return;
    }
    if (f.sequence > 0n && conn.welcome)
      e.sub._tracker.observe(conn.welcome.logEpoch, f.shard, f.sequence);
    if (!e.sub._deliver(msg)) {
      const range =
        f.sequence > 0n ? [{ shard: f.shard, first: f.sequence, last: f.sequence }] : [];
      this.#emit({
        type: "dropNotice",
        sid: f.sid,
        subject: e.subject,
        count: 1n,
        ranges: range,
        source: "client",
      });
    }
    if (e.remaining !== undefined && --e.remaining <= 0) this.#removeEntry(f.sid, false);
  }

  /**
   * Holds `f` for the full lossless subscription `sub`: nothing more is read (the socket is
   * paused where it can be) until the application has taken half its queue.
   */
  #hold(conn: Conn, f: MessageFrame, sub: Subscription): void {
    conn.paused = true;
    conn.transport.pause?.();
    // The broker's PINGs wait unread: a PING of the client's own now and then tells it the
    // client is alive (their PONGs, read later, answer nobody).
    const every = Math.max(
      25,
      Math.min(this.#opts.pingIntervalMs, conn.welcome?.pingIntervalMs || Infinity) / 2,
    );
    const ping = () => {
      conn.pongs.push(null);
      conn.lastPing = Date.now();
      conn.transport.write(encodeClientFrame({ type: "PING" }));
    };
    // Holds may come and go faster than `every` (an application taking a few messages at
    // a time): each starts with a PING unless one went out lately, or the broker, its
    // PINGs unread behind the deliveries, hears nothing for all the short holds together.
    if (Date.now() - conn.lastPing >= every) ping();
    const pings = setInterval(ping, every);
    conn.held = { frame: f, sub, pings };
    void sub._whenRoom().then(() => this.#release(conn));
  }

  /** The held subscription has room: its message goes in, and reading goes on. */
  #release(conn: Conn): void {
    const held = conn.held;
    if (!held) return;
    clearInterval(held.pings);
    conn.held = undefined;
    // A connection lost meanwhile: the subscription resumes from before the held message.
    if (conn.ended || conn.failure || this.#conn !== conn) return;
    conn.paused = false;
    conn.lastRead = Date.now();
    this.#onMessage(conn, held.frame);
    if (conn.held) return;
    conn.transport.resume?.();
    this.#onData(conn, new Uint8Array(0));
  }

  #onError(
    conn: Conn,
    code: number,
    fatal: boolean,
    sid: number | undefined,
    message: string,
  ): void {
    const e = sid === undefined ? undefined : this.#entries.get(sid);
    if (code === ErrorCode.EpochMismatch && e && sid !== undefined) {
      // The broker replays what its log holds instead; the token follows the new epoch.
      e.sub._tracker.reset(conn.welcome?.logEpoch);
      this.#emit({ type: "epochMismatch", sid, subject: e.subject, message });
      return;
    }
    const error = TernError.server(
      fatal ? "Server" : sid !== undefined ? "Refused" : "Server",
      code,
      message,
    );
    this.#emit({ type: "error", error, ...(sid !== undefined && { sid }) });
    if (fatal) {
      this.#fail(conn, "serverError", error);
      return;
    }
    if (e && sid !== undefined && code !== ErrorCode.UnknownSubscription) {
      // The subscription was not made.
      this.#removeEntry(sid, false, error);
    }
  }

  #onPresence(
    sid: number,
    count: number,
    more: boolean,
    body: Extract<ServerFrame, { type: "PRESENCE" }>["body"],
  ): void {
    const e = this.#entries.get(sid);
    const view = e?.sub.presence;
    if (!e || !view) return;
    let event: PresenceEvent | undefined;
    switch (body.kind) {
      case "joined":
        e.memberToken = body.memberToken;
        event = { type: "joined", user: body.user, count };
        break;
      case "refused":
        event = { type: "refused", code: body.code, message: body.message };
        this.#emit({
          type: "error",
          error: TernError.server("Refused", body.code, body.message),
          sid,
        });
        break;
      case "join":
        event = { type: "join", member: body.member, count };
        break;
      case "leave":
        event = { type: "leave", user: body.user, count };
        break;
      case "snapshot":
      case "page":
        if (body.offset === 0 || e.snapshot === undefined) e.snapshot = [];
        e.snapshot.push(...body.members);
        if (e.snapshot.length > 1_000_000) e.snapshot = undefined; // beyond any room limit: a broken stream
        if (!more && e.snapshot) {
          event = { type: "snapshot", members: e.snapshot, count };
          e.snapshot = undefined;
        }
        break;
    }
    if (event) view._apply(event);
  }

  #onQueryAnswer(
    id: number,
    count: number,
    more: boolean,
    body: Extract<ServerFrame, { type: "PRESENCE" }>["body"],
  ): void {
    const q = this.#queries.get(id);
    if (!q) return;
    if (body.kind === "refused") {
      this.#queries.delete(id);
      clearTimeout(q.timer);
      q.fail(TernError.server("Server", body.code, body.message));
      return;
    }
    if (body.kind !== "page" && body.kind !== "snapshot") return;
    q.offset ??= body.offset;
    q.members.push(...body.members);
    if (!more) {
      this.#queries.delete(id);
      clearTimeout(q.timer);
      q.ok({ count, offset: q.offset, members: q.members });
    }
  }

  #tick(): void {
    const conn = this.#conn;
    if (!conn || conn.stage !== "ready") return;
    const now = Date.now();
    // Not reading by choice: the server's silence means nothing (the held pings go on).
    if (conn.held) conn.lastRead = now;
    if (conn.goAwayDeadline !== undefined && now > conn.goAwayDeadline) {
      this.#fail(conn, "goingAway");
      return;
    }
    if (now - conn.lastRead > this.#opts.serverTimeoutMs) {
      this.#fail(
        conn,
        "heartbeatTimeout",
        new TernError(
          "Disconnected",
          `nothing from ${conn.server.text} for ${this.#opts.serverTimeoutMs} ms`,
        ),
      );
      return;
    }
    if (
      now - conn.lastRead >= this.#opts.pingIntervalMs &&
      now - conn.lastPing >= this.#opts.pingIntervalMs
    ) {
      conn.pongs.push(null);
      conn.lastPing = now;
      conn.transport.write(encodeClientFrame({ type: "PING" }));
    }
  }

  #onClosed(conn: Conn, error?: Error): void {
    conn.ended = true;
    if (conn.held) clearInterval(conn.held.pings);
    if (conn.stage === "handshake") {
      conn.failure ??= { reason: "serverClosed", ...(error && { error }) };
      conn.handshake.fail(
        conn.failure.error ??
          error ??
          new TernError("Connect", `${conn.server.text}: closed during the handshake`),
      );
      return;
    }
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    const failure = conn.failure ?? {
      reason:
        conn.goAwayDeadline !== undefined
          ? ("goingAway" as const)
          : error
            ? ("io" as const)
            : ("serverClosed" as const),
      ...(error && { error }),
    };
    const lost = new TernError(
      "Disconnected",
      `the connection to ${conn.server.text} was lost (${failure.reason}): the outcome is unknown`,
      undefined,
      failure.error && { cause: failure.error },
    );
    for (const p of conn.pongs.splice(0)) {
      if (p) {
        clearTimeout(p.timer);
        p.fail(lost);
      }
    }
    // Acknowledged publishes with a message id written to it go back to the front of the
    // offline buffer, in the order they were written (the order of #acks), as far as its
    // bound allows; the rest, and those without a message id, are told the outcome is unknown.
    const again: OutFrame[] = [];
    let againBytes = 0;
    let full = false;
    const reconnecting =
      this.#state !== "closed" && this.#state !== "draining" && this.#policy.enabled !== false;
    for (const [id, p] of this.#acks) {
      if (p.written !== conn.gen) continue;
      const frame = p.resend;
      if (frame !== undefined && reconnecting && !full) {
        const bytes = this.#outboxBytes + againBytes + frame.bytes.length;
        if (bytes <= this.#opts.offlineBufferBytes) {
          p.written = 0;
          again.push(frame);
          againBytes += frame.bytes.length;
          continue;
        }
        full = true; // from here on, none goes again (no gaps in the order)
      }
      this.#acks.delete(id);
      clearTimeout(p.timer);
      p.fail(lost);
    }
    this.#outbox.unshift(...again);
    this.#outboxBytes += againBytes;
    for (const [id, q] of this.#queries) {
      if (q.written === conn.gen) {
        this.#queries.delete(id);
        clearTimeout(q.timer);
        q.fail(lost);
      }
    }
    if (this.#state === "closed") return;
    this.#emit({
      type: "disconnected",
      server: conn.server.text,
      reason: failure.reason,
      ...(failure.error && { error: failure.error }),
    });
    if (this.#state === "draining" || this.#policy.enabled === false) {
      this.#shutdown(failure.error ?? lost);
      return;
    }
    this.#state = "reconnecting";
    // A lossless subscription was full: reconnecting before the application has made room
    // would only fill it again.
    void this.#reconnect(
      conn.goAwayDeadline !== undefined || failure.reason === "goingAway",
      conn.held?.sub._whenRoom(),
    );
  }

  async #reconnect(immediate: boolean, room?: Promise<void>): Promise<void> {
    if (room) {
      const signal = this.#stop.signal;
      let stop = () => {};
      const stopped = new Promise<void>((ok) => {
        stop = ok;
        signal.addEventListener("abort", stop, { once: true });
      });
      await Promise.race([room, stopped]);
      signal.removeEventListener("abort", stop);
    }
    let attempt = 0;
    let last: Error | undefined;
    while (this.#state === "reconnecting") {
      const delayMs = immediate && attempt === 0 ? 0 : backoffDelay(this.#policy, attempt);
      attempt++;
      this.#emit({ type: "reconnecting", attempt, delayMs, ...(last && { error: last }) });
      await sleep(delayMs, this.#stop.signal);
      if (this.#state !== "reconnecting") return;
      this.#serverIndex =
        (this.#serverIndex + (attempt > 1 || !immediate ? 1 : 0)) % this.#servers.length;
      const server = this.#servers[this.#serverIndex]!;
      try {
        const conn = await this.#handshake(server);
        if (this.#state !== "reconnecting") {
          conn.transport.close();
          return;
        }
        this.#ready(conn, true);
        return;
      } catch (e) {
        last = e as Error;
        if (this.#policy.maxAttempts !== undefined && attempt >= this.#policy.maxAttempts) {
          this.#shutdown(
            new TernError(
              "Connect",
              `gave up after ${attempt} reconnection attempts: ${last.message}`,
              undefined,
              { cause: last },
            ),
          );
          return;
        }
      }
    }
  }

  #shutdown(error: Error | undefined): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#stop.abort();
    clearInterval(this.#heartbeat);
    clearTimeout(this.#flushTimer);
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn) {
      this.#flushOutbox();
      conn.transport.close();
    }
    const closed = new TernError(
      "Closed",
      error ? `the client closed: ${error.message}` : "the client is closed",
      undefined,
      error && { cause: error },
    );
    for (const p of conn?.pongs.splice(0) ?? []) {
      if (p) {
        clearTimeout(p.timer);
        p.fail(closed);
      }
    }
    for (const map of [this.#acks, this.#queries, this.#requests] as Map<
      unknown,
      Pending<never>
    >[]) {
      for (const p of map.values()) {
        clearTimeout(p.timer);
        p.fail(closed);
      }
      map.clear();
    }
    this.#outbox.length = 0;
    this.#outboxBytes = 0;
    for (const sid of [...this.#entries.keys()]) this.#removeEntry(sid, false);
    for (const wake of [...this.#connectedWaiters]) wake();
    this.#emit({ type: "closed", ...(error && { error }) });
    for (const stream of this.#streams) stream.queue.end();
    this.#streams.clear();
    this.#closedOk(error);
  }

  #emit(event: ClientEvent): void {
    for (const stream of this.#streams) {
      if (stream.queue.pushDroppingOldest(event)) stream.lost++;
    }
    for (const l of this.#listeners.get(event.type) ?? []) {
      try {
        l(event);
      } catch (e) {
        // A listener's error is the application's: surface it, do not let it break the connection.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
