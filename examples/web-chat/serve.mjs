// Serves the chat page on http://127.0.0.1:8000 (PORT and HOST change it): index.html,
// chat.js, and the nats.ws ES module bundle from node_modules as ./nats.js. Nothing else.
// Run `npm ci` once first (it installs nats.ws, pinned in package-lock.json).

import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 8000);

/** @returns {string} */
function natsBundle() {
  try {
    return fileURLToPath(import.meta.resolve("nats.ws"));
  } catch {
    console.error("nats.ws is not installed here: run `npm ci` in examples/web-chat first");
    process.exit(1);
  }
}

/** URL path → [file, content type]. */
/** @type {Record<string, [string, string]>} */
const files = {
  "/": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/chat.js": [join(here, "chat.js"), "text/javascript; charset=utf-8"],
  "/nats.js": [natsBundle(), "text/javascript; charset=utf-8"],
};

createServer((req, res) => {
  const found = files[new URL(req.url ?? "/", "http://localhost").pathname];
  if (req.method !== "GET" || found === undefined) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    return;
  }
  const [file, type] = found;
  readFile(file).then(
    (body) => res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body),
    (error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${error}\n`),
  );
}).listen(port, host, () => {
  const page = `http://${host}:${port}/`;
  console.log(`web chat on ${page}`);
  console.log(`open ${page}?name=alice and ${page}?name=bob in two tabs`);
  console.log(
    "(ternd's WebSocket port is ws://<this host>:8080 unless ?server=ws://... says otherwise)",
  );
});
