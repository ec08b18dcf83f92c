// @ts-check
// A tiny static file server on a free loopback port, for the browser test and the example:
// serves the package folder (dist/, test/browser/, examples/) read-only, nothing outside it.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

/** @type {Record<string, string>} */
const TYPES = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".map": "application/json",
  ".css": "text/css",
};

/**
 * Serves `root`; resolves with its origin and a close function.
 * @param {string} root
 */
export async function serveDir(root) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    if (path.includes("..")) {
      res.writeHead(403).end();
      return;
    }
    readFile(join(root, path)).then(
      (body) =>
        res
          .writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" })
          .end(body),
      () => res.writeHead(404).end(),
    );
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((ok) => server.close(() => ok(undefined))),
  };
}
