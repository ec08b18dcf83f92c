// @ts-check
// A TCP proxy on 127.0.0.1 in front of ternd whose network a test can take away: while it
// is down, bytes in either direction vanish and nothing is closed (the connections stay
// open, as when a laptop's Wi-Fi dies: no FIN, no RST, just silence), and new connections
// are accepted but never reach ternd. When it is back, every connection that lived
// through the outage is dropped (a stream with a hole in it cannot go on) and new ones go
// through again. Only the clients behind it lose their network; ternd and every other
// client stay up.
//
// `muteReplies()` takes away only what ternd sends (the client's frames still reach it, its
// answers vanish), for a connection lost after the broker got a publish and before its ack
// came back; `restore()` then drops those connections the same way.
//
// Written for this package's chat test, after interop/js/test/proxy.js (which closes the
// connections at once instead), not imported from there.

import { connect as tcpConnect, createServer } from "node:net";

/** One client connection and, when the network was up as it came, its way to ternd. */
/** @typedef {{ client: import("node:net").Socket, upstream: import("node:net").Socket | null, dead: boolean, muted: boolean }} Pair */

export class Blackhole {
  /** @type {Set<Pair>} */
  #pairs = new Set();
  #down = false;

  /**
   * @param {import("node:net").Server} listener
   * @param {number} port
   */
  constructor(listener, port) {
    this.listener = listener;
    this.port = port;
  }

  /** The WebSocket address of ternd's `/tern` through the proxy. */
  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/tern`;
  }

  /**
   * Starts a proxy to 127.0.0.1:targetPort on a free port.
   * @param {number} targetPort
   * @returns {Promise<Blackhole>}
   */
  static async start(targetPort) {
    const listener = createServer();
    await new Promise((ok, fail) => {
      listener.once("error", fail);
      listener.listen(0, "127.0.0.1", () => ok(undefined));
    });
    const address = listener.address();
    if (address === null || typeof address === "string") {
      throw new Error("no address from listen(0)");
    }
    const proxy = new Blackhole(listener, address.port);
    listener.on("connection", (client) => proxy.#accept(client, targetPort));
    return proxy;
  }

  /**
   * @param {import("node:net").Socket} client
   * @param {number} targetPort
   */
  #accept(client, targetPort) {
    /** @type {Pair} */
    const pair = { client, upstream: null, dead: this.#down, muted: false };
    this.#pairs.add(pair);
    client.on("error", () => undefined);
    client.on("close", () => {
      this.#pairs.delete(pair);
      pair.upstream?.destroy();
    });
    if (pair.dead) {
      // Accepted, but the network is gone: what it sends goes nowhere, nothing answers.
      client.on("data", () => undefined);
      return;
    }
    const upstream = tcpConnect({ host: "127.0.0.1", port: targetPort });
    pair.upstream = upstream;
    upstream.on("error", () => undefined);
    client.on("data", (bytes) => {
      if (!pair.dead) upstream.write(bytes);
    });
    upstream.on("data", (bytes) => {
      if (!pair.dead && !pair.muted) client.write(bytes);
    });
    // ternd closing a connection reaches the client only while the network is up.
    upstream.on("close", () => {
      if (!pair.dead) client.destroy();
    });
  }

  /** Takes the network away: every byte from now on vanishes, nothing is closed. */
  cut() {
    this.#down = true;
    for (const pair of this.#pairs) pair.dead = true;
  }

  /** From now on what ternd sends on the open connections vanishes; what clients send still goes. */
  muteReplies() {
    for (const pair of this.#pairs) pair.muted = true;
  }

  /** Brings it back: what lived through the outage (or was muted) is dropped, new connections go through. */
  restore() {
    this.#down = false;
    for (const pair of this.#pairs) {
      if (pair.dead || pair.muted) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
    }
  }

  /** Stops listening and drops every connection. */
  async close() {
    this.cut();
    this.restore();
    await new Promise((ok) => this.listener.close(() => ok(undefined)));
  }
}
