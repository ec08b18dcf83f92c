// A bounded first-in first-out queue that one consumer reads with promises or `for await`.
//
// Owns: buffering between the connection and the application, and what happens on overflow
// (the caller decides: `push` returns false when full and keeps nothing). Must never grow
// past its capacity or wait without a timeout the caller chose.

import { TernError } from "./errors.js";

export class BoundedQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #head = 0;
  #waiters: { ok: (v: IteratorResult<T>) => void; fail: (e: unknown) => void }[] = [];
  #ended = false;
  #error: unknown = undefined;
  /** Told once the queue holds at most `below` items (or ends): `whenBelow`. */
  #room: { below: number; ok: () => void } | undefined;

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.#items.length - this.#head;
  }
  get ended(): boolean {
    return this.#ended;
  }

  /** Adds an item; false (and the item is not kept) when full or ended. */
  push(item: T): boolean {
    if (this.#ended) return false;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.ok({ value: item, done: false });
      return true;
    }
    if (this.length >= this.capacity) return false;
    this.#items.push(item);
    return true;
  }

  /** Adds an item, discarding the oldest when full; true when one was discarded. */
  pushDroppingOldest(item: T): boolean {
    if (this.push(item) || this.#ended) return false;
    this.#take();
    this.#items.push(item);
    return true;
  }

  /** Removes every queued item matching `pred`; returns how many. */
  removeWhere(pred: (item: T) => boolean): number {
    const kept = this.#items.slice(this.#head).filter((i) => !pred(i));
    const removed = this.length - kept.length;
    this.#items = kept;
    this.#head = 0;
    this.#tellRoom();
    return removed;
  }

  /**
   * Resolves once the queue holds at most `below` items, or has ended (at once if so
   * already). One wait at a time: a second call replaces the first, which never resolves.
   */
  whenBelow(below: number): Promise<void> {
    if (this.#ended || this.length <= below) return Promise.resolve();
    return new Promise((ok) => (this.#room = { below, ok }));
  }

  #tellRoom(): void {
    const room = this.#room;
    if (room && (this.#ended || this.length <= room.below)) {
      this.#room = undefined;
      room.ok();
    }
  }

  /** No more items: readers get what is queued, then the end (or `error`, if given). */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#tellRoom();
    for (const w of this.#waiters.splice(0)) {
      if (error === undefined) w.ok({ value: undefined, done: true });
      else w.fail(error);
    }
  }

  #take(): T | undefined {
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined as T;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    if (this.#room) this.#tellRoom();
    return item;
  }

  /** The next item; `done` once ended and empty. Rejects with Timeout after `timeoutMs`. */
  next(timeoutMs?: number): Promise<IteratorResult<T>> {
    if (this.length > 0) return Promise.resolve({ value: this.#take() as T, done: false });
    if (this.#ended) {
      return this.#error === undefined
        ? Promise.resolve({ value: undefined, done: true })
        : Promise.reject(this.#error);
    }
    if (timeoutMs === undefined) {
      // The common wait (`for await`): the promise's own functions are the waiter.
      return new Promise((ok, fail) => void this.#waiters.push({ ok, fail }));
    }
    return new Promise((ok, fail) => {
      const waiter = {
        ok: (v: IteratorResult<T>) => {
          clearTimeout(timer);
          ok(v);
        },
        fail: (e: unknown) => {
          clearTimeout(timer);
          fail(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        fail(new TernError("Timeout", `nothing arrived within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => this.next(),
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }
}
