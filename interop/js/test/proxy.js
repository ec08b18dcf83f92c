// A TCP proxy on 127.0.0.1 in front of the server, which a test can cut and restore: a
// network drop for the clients behind it only, while the server and every other client stay
// up. While cut, it closes the connections it had and every new one at once.

import { createServer, connect as tcpConnect } from "node:net";

export class Proxy {
  /** @type {Set<import("node:net").Socket>} */
  #sockets = new Set();
  #cut = false;

  /**
   * @param {import("node:net").Server} listener
   * @param {number} port
   */
  constructor(listener, port) {
    this.listener = listener;
    this.port = port;
    this.url = `ws://127.0.0.1:${port}`;
  }

  /**
   * Starts a proxy to 127.0.0.1:targetPort on a free port.
   * @param {number} targetPort
   * @returns {Promise<Proxy>}
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
    const proxy = new Proxy(listener, address.port);
    listener.on("connection", (client) => proxy.#accept(client, targetPort));
    return proxy;
  }

  /**
   * @param {import("node:net").Socket} client
   * @param {number} targetPort
   */
  #accept(client, targetPort) {
    if (this.#cut) {
      client.destroy();
      return;
    }
    const upstream = tcpConnect({ host: "127.0.0.1", port: targetPort });
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ]) {
      this.#sockets.add(from);
      from.pipe(to);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.#sockets.delete(from);
        to.destroy();
      });
    }
  }

  /** Drops every connection through the proxy, and refuses new ones until `restore`. */
  cut() {
    this.#cut = true;
    for (const socket of this.#sockets) {
      socket.destroy();
    }
  }

  /** Lets connections through again. */
  restore() {
    this.#cut = false;
  }

  /** Stops listening and drops every connection. */
  async close() {
    this.cut();
    await new Promise((ok) => {
      this.listener.close(() => ok(undefined));
    });
  }
}
