// A tiny static HTTP server on 127.0.0.1 for the browser tests: a fixed map from URL paths
// to files, nothing else (no directory listing, no path from the URL reaches the disk).

import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";

/** @type {Record<string, string>} */
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
};

/** The nats.ws ES module bundle in node_modules: what a page imports as `nats.ws`. */
export const NATS_WS_BUNDLE = fileURLToPath(import.meta.resolve("nats.ws"));

/**
 * Serves `routes` (URL path → file) until `close`.
 * @param {Record<string, string>} routes
 * @returns {Promise<{ origin: string, close: () => Promise<void> }>}
 */
export async function serveFiles(routes) {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const file = routes[path];
    if (req.method !== "GET" || file === undefined) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    readFile(file).then(
      (body) => {
        const type = TYPES[extname(file)] ?? "application/octet-stream";
        res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
      },
      (error) => {
        res.writeHead(500, { "content-type": "text/plain" }).end(`${error}\n`);
      },
    );
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok(undefined));
  });
  const address = server.address();
  if (address === null || typeof address === "string") {
    throw new Error("no address from listen(0)");
  }
  return {
    origin: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(() => ok(undefined));
      }),
  };
}
