// Subscriptions as the application sees them: `Msg`, `Subscription` (an async iterable of
// messages with a resume token), presence views, and the resume-token tracker.
//
// Owns: per-subscription state the connection feeds (the client-side queue, its bound and
// drop count, the highest sequence seen per shard, the presence view). Must never do I/O
// or block the connection: a full queue drops the new message and counts it.

import type { Member, ResumeToken, SequenceRange } from "./codec.js";
import { TernError } from "./errors.js";
import { MsgHeaders, type HeadersInit } from "./headers.js";
import { BoundedQueue } from "./queue.js";

/**
 * The last sequence seen per shard, raised by where the subscription started (SUBSCRIBED):
 * the resume token a resubscription carries, so it continues with no gap and no duplicate.
 */
export class ResumeTracker {
  epoch: bigint | undefined;
  last: bigint[] = [];

  constructor(token?: ResumeToken) {
    if (token) {
      this.epoch = token.epoch;
      this.last = [...token.lastSequences];
    }
  }

  observe(epoch: bigint, shard: number, sequence: bigint): void {
    if (epoch !== this.epoch) this.reset(epoch);
    while (this.last.length <= shard) this.last.push(0n);
    if (sequence > this.last[shard]!) this.last[shard] = sequence;
  }

  startAt(epoch: bigint, lastSequences: bigint[]): void {
    if (epoch !== this.epoch) this.reset(epoch);
    lastSequences.forEach((s, i) => {
      if (i >= this.last.length) this.last.push(0n);
      if (s > this.last[i]!) this.last[i] = s;
    });
  }

  reset(epoch: bigint | undefined): void {
    this.epoch = epoch;
    this.last = [];
  }

  /**
   * The token, once the epoch is known (from SUBSCRIBED or a message). Unlike the Rust
   * client's, a known epoch with all sequences 0 still gives a token (epoch, no shards):
   * resuming it replays from the start, which a live resubscription would miss.
   */
  token(): ResumeToken | undefined {
    if (this.epoch === undefined) return undefined;
    let len = this.last.length;
    while (len > 0 && this.last[len - 1] === 0n) len--;
    return { epoch: this.epoch, lastSequences: this.last.slice(0, len) };
  }
}

/** Answers a message (set by the client). */
export interface Responder {
  publish(subject: string, payload: Uint8Array | string, options?: { headers?: HeadersInit }): void;
}

const textDecoder = new TextDecoder();

/** A delivered message. */
export class Msg {
  #headers: MsgHeaders | undefined;
  constructor(
    readonly subject: string,
    readonly payload: Uint8Array,
    readonly sid: number,
    readonly priority: number,
    readonly shard: number,
    /** Its sequence in `shard` (0: the store does not keep its subject). */
    readonly sequence: bigint,
    /** When the broker received it, ns since the Unix epoch. */
    readonly timestamp: bigint,
    /** Delivered from the log (a catch-up), not live. */
    readonly replayed: boolean,
    readonly reply: string | undefined,
    /** The header block exactly as it arrived. */
    readonly rawHeaders: Uint8Array | undefined,
    readonly responder: Responder,
  ) {}

  /** The headers, parsed (undefined when the message has no header block). */
  get headers(): MsgHeaders | undefined {
    if (this.rawHeaders === undefined) return undefined;
    this.#headers ??= MsgHeaders.decode(this.rawHeaders);
    return this.#headers;
  }

  /** The payload as UTF-8 text. */
  string(): string {
    return textDecoder.decode(this.payload);
  }

  json<T = unknown>(): T {
    return JSON.parse(this.string()) as T;
  }

  /** Publishes an answer to the message's reply subject; false when it has none. */
  respond(payload: Uint8Array | string, options?: { headers?: HeadersInit }): boolean {
    if (this.reply === undefined) return false;
    this.responder.publish(this.reply, payload, options);
    return true;
  }

  /** A no-responders answer (status 503, empty payload). */
  get isNoResponders(): boolean {
    return this.payload.length === 0 && this.headers?.status === 503;
  }
}

export type PresenceEvent =
  /** This subscription's join was applied (after every subscribe and resubscribe). */
  | { type: "joined"; user: string; count: number }
  /** This subscription's join was refused: it stays as a plain subscription. */
  | { type: "refused"; code: number; message: string }
  /** The whole room (frames of a multi-frame snapshot assembled). */
  | { type: "snapshot"; members: Member[]; count: number }
  | { type: "join"; member: Member; count: number }
  | { type: "leave"; user: string; count: number };

/**
 * A room's presence as one subscription sees it: the events (a bounded queue: when full,
 * the queued snapshot, join and leave events are replaced by one snapshot of the view, and
 * counted in `superseded`) and the current view.
 */
export class PresenceView implements AsyncIterable<PresenceEvent> {
  readonly #queue: BoundedQueue<PresenceEvent>;
  #members: Member[] | undefined;
  /** The room's member count, as last told. */
  count = 0;
  /** The user this connection is in the room, from the latest `joined`. */
  user: string | undefined;
  /** Events replaced by a snapshot because the application fell behind. */
  superseded = 0;

  constructor(capacity: number) {
    this.#queue = new BoundedQueue(capacity);
  }

  /** The members (the last snapshot plus joins and leaves since), undefined before one. */
  members(): Member[] | undefined {
    return this.#members?.slice();
  }

  /** The next event; rejects with Timeout after `timeoutMs`, ends with the subscription. */
  async next(timeoutMs?: number): Promise<PresenceEvent> {
    const r = await this.#queue.next(timeoutMs);
    if (r.done) throw new TernError("Unsubscribed", "the subscription ended");
    return r.value;
  }

  [Symbol.asyncIterator](): AsyncIterator<PresenceEvent> {
    return this.#queue[Symbol.asyncIterator]();
  }

  /** @internal */
  _apply(e: PresenceEvent): void {
    this.count = e.type === "refused" ? this.count : e.count;
    if (e.type === "snapshot") {
      this.#members = e.members.slice();
      // A snapshot replaces whatever snapshot, join and leave is still queued.
      this.superseded += this.#queue.removeWhere(
        (q) => q.type !== "joined" && q.type !== "refused",
      );
    } else if (e.type === "join" && this.#members) {
      this.#members = this.#members.filter((m) => m.user !== e.member.user);
      this.#members.push(e.member);
    } else if (e.type === "leave" && this.#members) {
      this.#members = this.#members.filter((m) => m.user !== e.user);
    } else if (e.type === "joined") {
      this.user = e.user;
    }
    if (!this.#queue.push(e)) {
      this.superseded += this.#queue.removeWhere(
        (q) => q.type !== "joined" && q.type !== "refused",
      );
      if (e.type === "joined" || e.type === "refused") this.#queue.push(e);
      if (this.#members)
        this.#queue.push({ type: "snapshot", members: this.#members.slice(), count: this.count });
      else this.superseded++;
    }
  }

  /** @internal */
  _end(error?: unknown): void {
    this.#queue.end(error);
  }
}

/** What the client does for a subscription (implemented by the client). */
export interface SubscriptionOwner {
  unsubscribe(sid: number, max?: number): void;
}

/**
 * Receives a callback subscription's messages, in order, as they are decoded (no client
 * queue, no promise per message); called once more with the error when the subscription
 * ends with one (a refusal, say). An ordinary end (unsubscribe, its max reached, drain,
 * close) makes no call. What it throws is the application's: rethrown on its own (as a
 * listener's is), it does not stop the connection or the subscription.
 */
export type SubscriptionCallback = (
  ...args: [error: undefined, msg: Msg] | [error: TernError, msg: undefined]
) => void;

/**
 * A subscription: an async iterable of its messages, in order (or, made with a `callback`,
 * those messages handed to the callback instead).
 */
export class Subscription implements AsyncIterable<Msg> {
  readonly #queue: BoundedQueue<Msg>;
  readonly #callback: SubscriptionCallback | undefined;
  /** @internal */
  readonly _tracker: ResumeTracker;
  #readyOk!: () => void;
  #readyFail!: (e: unknown) => void;
  /** Messages the client dropped because this subscription's queue was full. */
  dropped = 0;
  /** Messages the broker reported dropped (DROP_NOTICE), summed. */
  serverDropped = 0n;
  /**
   * Resolves when the broker has the subscription in every shard (its first SUBSCRIBED);
   * rejects when the broker refuses it.
   */
  readonly ready: Promise<void>;
  /** The room's presence, when subscribed with `presence` or `presenceEvents`. */
  readonly presence: PresenceView | undefined;

  constructor(
    readonly sid: number,
    readonly subject: string,
    readonly queueGroup: string | undefined,
    capacity: number,
    presenceCapacity: number | undefined,
    start: ResumeToken | undefined,
    readonly owner: SubscriptionOwner,
    callback?: SubscriptionCallback,
  ) {
    this.#queue = new BoundedQueue(capacity);
    this.#callback = callback;
    this._tracker = new ResumeTracker(start);
    this.presence = presenceCapacity === undefined ? undefined : new PresenceView(presenceCapacity);
    this.ready = new Promise<void>((ok, fail) => {
      this.#readyOk = ok;
      this.#readyFail = fail;
    });
    // The refusal also ends the iteration and is an `error` event: awaiting `ready` is optional.
    this.ready.catch(() => undefined);
  }

  /** Where to resume from: epoch and, per shard, the last sequence delivered (or skipped). */
  resumeToken(): ResumeToken | undefined {
    return this._tracker.token();
  }

  /** Messages queued in the client, not yet read. */
  get pending(): number {
    return this.#queue.length;
  }

  get closed(): boolean {
    return this.#queue.ended;
  }

  /** Made with a `callback`: its messages go there, not to `next()` or an iteration. */
  get isCallback(): boolean {
    return this.#callback !== undefined;
  }

  /**
   * The next message; rejects with Timeout after `timeoutMs`, `Unsubscribed` once ended,
   * and InvalidOption for a callback subscription.
   */
  async next(timeoutMs?: number): Promise<Msg> {
    if (this.#callback) throw this.#notIterable();
    const r = await this.#queue.next(timeoutMs);
    if (r.done)
      throw new TernError("Unsubscribed", `subscription ${this.sid} (${this.subject}) ended`);
    return r.value;
  }

  [Symbol.asyncIterator](): AsyncIterator<Msg> {
    if (this.#callback) {
      const error = this.#notIterable();
      return {
        next: () => Promise.reject(error),
        return: () => Promise.resolve({ value: undefined, done: true }),
      };
    }
    return this.#queue[Symbol.asyncIterator]();
  }

  #notIterable(): TernError {
    return new TernError(
      "InvalidOption",
      `subscription ${this.sid} (${this.subject}) delivers to its callback: it cannot be read`,
    );
  }

  /** Ends the subscription now, or after `max` more deliveries. */
  unsubscribe(max?: number): void {
    this.owner.unsubscribe(this.sid, max);
  }

  /** @internal A message now would not fit: the queue is full (never with a callback). */
  _full(): boolean {
    return (
      this.#callback === undefined &&
      !this.#queue.ended &&
      this.#queue.length >= this.#queue.capacity
    );
  }

  /** @internal Resolves once the queue is down to half its capacity, or has ended. */
  _whenRoom(): Promise<void> {
    return this.#queue.whenBelow(Math.floor(this.#queue.capacity / 2));
  }

  /** @internal false when the queue was full (the message is dropped and counted). */
  _deliver(m: Msg): boolean {
    const callback = this.#callback;
    if (callback) {
      if (this.#queue.ended) return false;
      try {
        callback(undefined, m);
      } catch (e) {
        rethrowApart(e);
      }
      return true;
    }
    if (this.#queue.push(m)) return true;
    if (!this.#queue.ended) this.dropped++;
    return false;
  }

  /** @internal */
  _subscribed(): void {
    this.#readyOk();
  }

  /** @internal Ends it: queued messages stay readable, then the iteration ends (or throws). */
  _end(error?: unknown): void {
    if (error !== undefined) this.#readyFail(error);
    else this.#readyOk();
    const ending = !this.#queue.ended;
    this.#queue.end(error);
    this.presence?._end();
    if (ending && error !== undefined && this.#callback) {
      try {
        this.#callback(
          error instanceof TernError
            ? error
            : new TernError("Unsubscribed", String(error), undefined, { cause: error }),
          undefined,
        );
      } catch (e) {
        rethrowApart(e);
      }
    }
  }
}

/** What the application's callback threw: surfaced on its own, the connection goes on. */
function rethrowApart(e: unknown): void {
  queueMicrotask(() => {
    throw e;
  });
}

export type { Member, SequenceRange };
