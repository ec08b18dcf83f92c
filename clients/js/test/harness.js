// @ts-check
// The test harness: starts a real ternd on free loopback ports (binary TCP and WebSocket,
// read from its "listening on" lines), restarts it on the same ports and data directory,
// and collects what a client hands the application, with deadlines.
//
// Copies the approach of interop/js/test/harness.js (not imported from there). Every wait
// has a deadline; a ternd that dies or never listens fails the test with its output's tail.

import { spawn } from "node:child_process";
import { access, constants, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** clients/js */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}

/**
 * The promise's value, or an error naming `what` after `ms`.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export async function within(promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_, fail) => {
    timer = setTimeout(() => fail(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `check()` is true, polling.
 * @param {() => boolean} check
 * @param {number} ms
 * @param {string} what
 */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(10);
  }
}

function terndPath() {
  return process.env.TERN_TERND ?? resolve(PACKAGE_DIR, "../../target/debug/ternd");
}

/** One ternd process at a time, on the ports it picked first, with one data directory. */
export class Ternd {
  /** @type {import("node:child_process").ChildProcess | null} */
  #proc = null;
  #output = "";
  /** @type {Promise<void> | null} */
  #exited = null;

  /**
   * @param {string} dir
   * @param {string[]} extra
   */
  constructor(dir, extra) {
    this.dir = dir;
    this.extra = extra;
    this.binaryPort = 0;
    this.wsPort = 0;
  }

  get tcpUrl() {
    return `tern://127.0.0.1:${this.binaryPort}`;
  }
  get wsUrl() {
    return `ws://127.0.0.1:${this.wsPort}/tern`;
  }
  get output() {
    return this.#output;
  }

  /**
   * Starts ternd; `extra` flags are added to the command line.
   * @param {string[]} [extra]
   */
  static async start(extra = []) {
    const dir = await mkdtemp(join(tmpdir(), "tern-client-js-"));
    const t = new Ternd(dir, extra);
    try {
      await t.run();
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return t;
  }

  async run() {
    const ternd = terndPath();
    try {
      await access(ternd, constants.X_OK);
    } catch {
      throw new Error(
        `no ternd at ${ternd}: cargo build -p tern-broker --bin ternd, or set TERN_TERND`,
      );
    }
    const args = [
      "--listen",
      "127.0.0.1:0",
      "--binary-listen",
      `127.0.0.1:${this.binaryPort}`,
      "--websocket-listen",
      `127.0.0.1:${this.wsPort}`,
      "--no-monitor",
      "--no-pin",
      "--workers",
      "2",
      "--data-dir",
      join(this.dir, "data"),
      ...(this.extra.includes("--log-size") ? [] : ["--log-size", "4MiB"]),
      "--log-level",
      "warn",
      ...this.extra,
    ];
    this.#output = "";
    const proc = spawn(ternd, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#proc = proc;
    /** @param {Buffer} chunk */
    const keep = (chunk) => {
      this.#output = (this.#output + chunk.toString()).slice(-16_384);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    this.#exited = new Promise((ok) => {
      proc.once("exit", () => ok(undefined));
      proc.once("error", (e) => {
        keep(Buffer.from(`\n${e.message}\n`));
        ok(undefined);
      });
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const bin = /^ternd binary listening on 127\.0\.0\.1:(\d+)$/m.exec(this.#output);
      const ws = /^ternd websocket listening on 127\.0\.0\.1:(\d+)$/m.exec(this.#output);
      if (bin && ws) {
        this.binaryPort = Number(bin[1]);
        this.wsPort = Number(ws[1]);
        return;
      }
      if (proc.exitCode !== null || proc.signalCode !== null) {
        await this.#exited;
        throw new Error(`ternd exited before listening:\n${this.#output}`);
      }
      if (Date.now() > deadline) {
        await this.stop("SIGKILL");
        throw new Error(`ternd did not listen:\n${this.#output}`);
      }
      await sleep(20);
    }
  }

  /** @param {NodeJS.Signals} [signal] */
  async stop(signal = "SIGTERM") {
    const proc = this.#proc;
    if (proc === null || this.#exited === null) return;
    this.#proc = null;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      try {
        await within(this.#exited, STOP_TIMEOUT_MS, `ternd to exit on ${signal}`);
      } catch {
        proc.kill("SIGKILL");
        await this.#exited;
      }
    }
  }

  /** @param {NodeJS.Signals} signal */
  signal(signal) {
    this.#proc?.kill(signal);
  }

  async close() {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Reads a subscription into an array in the background, so a test can wait for a count.
 * @param {import("tern-client").Subscription} sub
 */
export function collect(sub) {
  /** @type {import("tern-client").Msg[]} */
  const msgs = [];
  /** @type {{ error: unknown }} */
  const state = { error: undefined };
  const done = (async () => {
    try {
      for await (const m of sub) msgs.push(m);
    } catch (e) {
      state.error = e;
    }
  })();
  return {
    msgs,
    state,
    done,
    /**
     * @param {number} n
     * @param {number} [ms]
     */
    async first(n, ms = 5000) {
      await until(
        () => msgs.length >= n || state.error !== undefined,
        ms,
        `${n} messages on ${sub.subject} (have ${msgs.length})`,
      );
      if (msgs.length < n) throw state.error;
      return msgs.slice(0, n);
    },
    texts() {
      return msgs.map((m) => m.string());
    },
  };
}

/**
 * Records a client's events.
 * @param {import("tern-client").Client} client
 */
export function recordEvents(client) {
  /** @type {import("tern-client").ClientEvent[]} */
  const events = [];
  const stream = client.events();
  void (async () => {
    for await (const e of stream) events.push(e);
  })();
  return {
    events,
    /**
     * @param {import("tern-client").ClientEvent["type"]} type
     * @param {number} [count]
     * @param {number} [ms]
     */
    async seen(type, count = 1, ms = 10_000) {
      await until(
        () => events.filter((e) => e.type === type).length >= count,
        ms,
        `${count} ${type} events (seen: ${events.map((e) => e.type).join(", ")})`,
      );
      return events.filter((e) => e.type === type);
    },
  };
}
