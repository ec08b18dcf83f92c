// The test harness: starts the server under test on free loopback ports (it picks them and
// says which), stops and restarts it, and connects the official nats.ws client to it from
// Node.
//
// The server is ternd unless TERN_JS_SERVER=nats-server: then the real nats-server (its
// WebSocket listener, from a generated config file) runs the same tests, which shows that
// the tests expect what NATS itself does and not only what ternd happens to do. Tests of
// ternd's own features (`$TERN.REPLAY`) skip themselves there.
//
// Every wait here has a deadline, and a server that dies or never listens fails the test
// with the tail of its output.

import { execFile, spawn } from "node:child_process";
import { access, constants, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";

// Node 20 has no global WebSocket; nats.ws needs a W3C one, which `ws` provides. Set before
// nats.ws opens its first connection (it looks the global up at connect time).
if (typeof globalThis.WebSocket === "undefined") {
  Object.assign(globalThis, { WebSocket });
}

const { connect } = await import("nats.ws");

/** @typedef {import("nats.ws").NatsConnection} NatsConnection */
/** @typedef {import("nats.ws").ConnectionOptions} ConnectionOptions */
/** @typedef {"ternd" | "nats-server"} ServerKind */
/**
 * @typedef {object} ServerOptions
 * @property {boolean} [compression] offer permessage-deflate to WebSocket clients
 * @property {Certificate} [tls] serve wss:// with this certificate and key
 */
/**
 * A certificate and its key, PEM files.
 * @typedef {{ cert: string, key: string }} Certificate
 */

/** interop/js, the folder this package is in. */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The line each server writes once its WebSocket port is open, with the port: the harness
 * waits for the whole line (not merely for the port to accept, which could be another
 * process's).
 * @type {Record<ServerKind, RegExp>}
 */
const READY = {
  ternd: /^ternd websocket listening on 127\.0\.0\.1:(\d+)\n/m,
  "nats-server": /Listening for websocket clients on wss?:\/\/127\.0\.0\.1:(\d+)\s/,
};

/** How long a server may take to listen, and to exit after SIGTERM. */
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

/** @returns {ServerKind} */
function serverKind() {
  const kind = process.env.TERN_JS_SERVER ?? "ternd";
  if (kind !== "ternd" && kind !== "nats-server") {
    throw new Error(`TERN_JS_SERVER=${kind}: expected ternd or nats-server`);
  }
  return kind;
}

/** Which server the tests run against, from TERN_JS_SERVER (default ternd). */
export const SERVER_KIND = serverKind();

/** True when the server is ternd, whose own features (`$TERN.REPLAY`) can be tested. */
export const IS_TERND = SERVER_KIND === "ternd";

/** @returns {string} the ternd binary: TERN_TERND, else this checkout's debug build */
function terndPath() {
  return process.env.TERN_TERND ?? resolve(PACKAGE_DIR, "../../target/debug/ternd");
}

/** @returns {string} the nats-server binary: TERN_NATS_SERVER, else on the PATH */
function natsServerPath() {
  return process.env.TERN_NATS_SERVER ?? "nats-server";
}

/**
 * Makes a self-signed certificate for 127.0.0.1 (an EC P-256 key, valid for a day) in `dir`,
 * with openssl.
 * @param {string} dir
 * @returns {Promise<Certificate>}
 */
export async function makeCertificate(dir) {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  await new Promise((ok, fail) => {
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
      (error, _stdout, stderr) => (error ? fail(new Error(`openssl: ${stderr}`)) : ok(undefined)),
    );
  });
  return { cert, key };
}

/**
 * Makes nats.ws (through the global WebSocket) trust `cert`, besides the system's CAs: for
 * the wss:// tests, whose certificate is self-signed. Each test file runs in a process of
 * its own, so this lasts for the rest of the file.
 * @param {Certificate} cert
 */
export async function trustCertificate(cert) {
  const ca = await readFile(cert.cert);
  class TrustingWebSocket extends WebSocket {
    /**
     * @param {string} url
     * @param {string | string[]} [protocols]
     */
    constructor(url, protocols) {
      super(url, protocols, { ca });
    }
  }
  Object.assign(globalThis, { WebSocket: TrustingWebSocket });
}

/**
 * Resolves after `ms` milliseconds.
 * @param {number} ms
 */
export function sleep(ms) {
  return new Promise((ok) => {
    setTimeout(ok, ms);
  });
}

/**
 * The promise's value, or an error naming `what` when it takes longer than `ms`.
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
 * The server under test: one process at a time, on the WebSocket port it picked at its first
 * start and on that port after a restart (so a client can reconnect to it), with the same
 * data directory (so what ternd stored before a restart can be replayed after it).
 */
export class Server {
  /** @type {import("node:child_process").ChildProcess | null} */
  #proc = null;
  /** The last few KiB the process wrote, for error messages. */
  #output = "";
  /** @type {Promise<void> | null} */
  #exited = null;
  /** Every client `connect` made, closed by `close` (a test that failed half-way did not). */
  /** @type {Set<NatsConnection>} */
  #clients = new Set();

  /**
   * @param {string} dir a fresh temporary directory this server owns
   * @param {ServerOptions} options
   */
  constructor(dir, options) {
    this.dir = dir;
    this.options = options;
    this.kind = SERVER_KIND;
    /** The WebSocket port: the server picks it at the first start and keeps it after. */
    this.wsPort = 0;
  }

  /** The URL clients connect to. */
  get url() {
    return `${this.options.tls ? "wss" : "ws"}://127.0.0.1:${this.wsPort}`;
  }

  /**
   * Starts the server under test on a free WebSocket port and waits until it listens.
   * @param {ServerOptions} [options]
   * @returns {Promise<Server>}
   */
  static async start(options = {}) {
    const dir = await mkdtemp(join(tmpdir(), "tern-js-"));
    const server = new Server(dir, options);
    try {
      await server.run();
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    return server;
  }

  /** @returns {Promise<{ command: string, args: string[] }>} */
  async #commandLine() {
    if (this.kind === "ternd") {
      const ternd = terndPath();
      try {
        await access(ternd, constants.X_OK);
      } catch {
        throw new Error(
          `no ternd at ${ternd}: build it (cargo build -p tern-broker --bin ternd), set TERN_TERND, or set TERN_JS_SERVER=nats-server`,
        );
      }
      return {
        command: ternd,
        args: [
          "--listen",
          "127.0.0.1:0",
          "--websocket-listen",
          `127.0.0.1:${this.wsPort}`, // 0 at first: a free port
          "--no-binary",
          "--no-monitor",
          "--no-pin",
          "--workers",
          "2",
          "--data-dir",
          join(this.dir, "data"),
          "--log-size",
          "4MiB",
          ...(this.options.compression ? ["--websocket-compression"] : []),
          ...(this.options.tls
            ? ["--tls-cert", this.options.tls.cert, "--tls-key", this.options.tls.key]
            : []),
        ],
      };
    }
    // nats-server takes its WebSocket listener only from a config file.
    const config = join(this.dir, "nats-server.conf");
    await writeFile(
      config,
      [
        `listen: "127.0.0.1:-1"`, // -1: a free port
        `websocket {`,
        `  listen: "127.0.0.1:${this.wsPort || -1}"`,
        this.options.tls
          ? `  tls { cert_file: "${this.options.tls.cert}", key_file: "${this.options.tls.key}" }`
          : `  no_tls: true`,
        `  compression: ${Boolean(this.options.compression)}`,
        `}`,
        "",
      ].join("\n"),
    );
    return { command: natsServerPath(), args: ["-c", config] };
  }

  /** Starts the process (again, after `stop`) and waits until it listens. */
  async run() {
    const { command, args } = await this.#commandLine();
    this.#output = "";
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.#proc = proc;
    /** @type {number | null} */
    let listening = null;
    /** @param {Buffer} chunk */
    const keep = (chunk) => {
      this.#output = (this.#output + chunk.toString()).slice(-16_384);
      const line = listening === null ? READY[this.kind].exec(this.#output) : null;
      if (line) {
        listening = Number(line[1]);
      }
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    this.#exited = new Promise((ok) => {
      proc.once("exit", () => ok(undefined));
      proc.once("error", (error) => {
        keep(Buffer.from(`\n${error.message}\n`));
        ok(undefined);
      });
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) {
        await this.#exited;
        throw new Error(`${command} exited before listening:\n${this.#output}`);
      }
      if (listening !== null) {
        this.wsPort = listening;
        return;
      }
      if (Date.now() > deadline) {
        await this.stop("SIGKILL");
        throw new Error(`${command} did not listen on ${this.url}:\n${this.#output}`);
      }
      await sleep(25);
    }
  }

  /**
   * Stops the process: SIGTERM (a graceful shutdown), or SIGKILL when `signal` says so (a
   * crash); waits until it has exited, killing it if SIGTERM took too long.
   * @param {NodeJS.Signals} [signal]
   */
  async stop(signal = "SIGTERM") {
    const proc = this.#proc;
    if (proc === null || this.#exited === null) {
      return;
    }
    this.#proc = null;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      try {
        await within(this.#exited, STOP_TIMEOUT_MS, `${this.kind} to exit on ${signal}`);
      } catch {
        proc.kill("SIGKILL");
        await this.#exited;
      }
    }
  }

  /**
   * Sends the process a signal (SIGUSR2: lame duck mode, for both servers).
   * @param {NodeJS.Signals} signal
   */
  signal(signal) {
    this.#proc?.kill(signal);
  }

  /** Closes the clients `connect` made, stops the process and removes its directory. */
  async close() {
    await Promise.allSettled([...this.#clients].map((nc) => nc.close()));
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Connects nats.ws to this server.
   * @param {Partial<ConnectionOptions>} [options]
   * @returns {Promise<NatsConnection>}
   */
  async connect(options = {}) {
    const nc = await connectTo(this.url, options);
    this.#clients.add(nc);
    return nc;
  }
}

/**
 * Connects nats.ws to a WebSocket URL (the server, or a proxy in front of it).
 * @param {string} url
 * @param {Partial<ConnectionOptions>} [options]
 * @returns {Promise<NatsConnection>}
 */
export function connectTo(url, options = {}) {
  return within(
    connect({ servers: url, name: "tern-interop-js", ...options }),
    START_TIMEOUT_MS,
    `nats.ws to connect to ${url}`,
  );
}

/**
 * A subscription that keeps what it receives, in order, so a test can wait for a number of
 * messages with a deadline (a `for await` loop cannot be left and resumed: leaving it ends
 * the subscription's iterator).
 */
export class Collector {
  /** @type {import("nats.ws").Msg[]} */
  msgs = [];
  /** @type {Error | null} */
  error = null;
  /** @type {(() => void)[]} */
  #wake = [];

  /**
   * @param {NatsConnection} nc
   * @param {string} subject
   * @param {Partial<import("nats.ws").SubscriptionOptions>} [options]
   */
  constructor(nc, subject, options = {}) {
    this.subject = subject;
    this.sub = nc.subscribe(subject, {
      ...options,
      callback: (error, msg) => {
        if (error) {
          this.error = error;
        } else {
          this.msgs.push(msg);
        }
        for (const wake of this.#wake.splice(0)) {
          wake();
        }
      },
    });
  }

  /**
   * The first `count` messages, once that many have come, or an error after `ms`.
   * @param {number} count
   * @param {number} [ms]
   * @returns {Promise<import("nats.ws").Msg[]>}
   */
  async first(count, ms = 5_000) {
    const wait = async () => {
      while (this.msgs.length < count) {
        if (this.error) {
          throw this.error;
        }
        await new Promise((wake) => {
          this.#wake.push(() => wake(undefined));
        });
      }
      return this.msgs.slice(0, count);
    };
    return within(wait(), ms, `${count} messages on ${this.subject} (have ${this.msgs.length})`);
  }

  /** The payloads received so far, as text. */
  texts() {
    return this.msgs.map((msg) => msg.string());
  }
}

/**
 * The status events (disconnect, reconnect, ...) of a connection, kept in order so a test
 * can wait for one with a deadline.
 */
export class StatusLog {
  /** @type {string[]} */
  events = [];
  /** @type {(() => void)[]} */
  #wake = [];

  /** @param {NatsConnection} nc */
  constructor(nc) {
    void (async () => {
      for await (const status of nc.status()) {
        this.events.push(status.type);
        for (const wake of this.#wake.splice(0)) {
          wake();
        }
      }
    })();
  }

  /**
   * Waits until `type` has been seen `count` times in all.
   * @param {string} type
   * @param {number} [count]
   * @param {number} [ms]
   */
  async seen(type, count = 1, ms = 10_000) {
    const wait = async () => {
      while (this.events.filter((e) => e === type).length < count) {
        await new Promise((wake) => {
          this.#wake.push(() => wake(undefined));
        });
      }
    };
    await within(wait(), ms, `${count} ${type} events (seen: ${this.events.join(", ")})`);
  }
}
