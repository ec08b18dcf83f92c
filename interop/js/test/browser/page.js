// Runs in Chromium: connects nats.ws over the browser's own WebSocket to the server named by
// `?server=`, then subscribes, publishes, and makes requests, answered by the Node side of
// the test and by this page itself. The result is `window.natsTest`, a promise the test
// awaits.

import { connect, headers } from "nats.ws";

/**
 * @typedef {object} PageResult
 * @property {string} userAgent
 * @property {string} echoed what the Node side sent back for the page's message
 * @property {string} reply the reply to a request the Node side answers
 * @property {string | null} replyHeader a header of that reply
 * @property {string} selfReply the reply to a request this page answers
 * @property {number} roundTripMs the request's round trip, as the page timed it
 * @property {string} extensions the WebSocket extensions Chromium and the server agreed on
 */

/**
 * Opens a plain WebSocket to the server, reads its first message (INFO) and says which
 * extensions were agreed: nats.ws does not show its socket.
 * @param {string} server
 * @returns {Promise<string>}
 */
function negotiatedExtensions(server) {
  return new Promise((ok, fail) => {
    const socket = new WebSocket(server);
    socket.onmessage = () => {
      ok(socket.extensions);
      socket.close();
    };
    socket.onerror = () => fail(new Error(`WebSocket to ${server} failed`));
  });
}

/** @returns {Promise<PageResult>} */
async function run() {
  const server = new URL(location.href).searchParams.get("server");
  if (!server) {
    throw new Error("no ?server= in the page URL");
  }
  const extensions = await negotiatedExtensions(server);
  const nc = await connect({ servers: server, name: "chromium-page" });

  // Subscribe, then publish: the Node side echoes what it gets on browser.from-page.
  const echo = nc.subscribe("browser.to-page", { max: 1 });
  await nc.flush();
  nc.publish("browser.from-page", "hello from chromium");
  let echoed = "";
  for await (const msg of echo) {
    echoed = msg.string();
  }

  // A request the Node side answers, with a header each way, timed.
  const h = headers();
  h.set("Asked-By", "chromium");
  const started = performance.now();
  const answer = await nc.request("svc.upper", "hello from chromium", {
    timeout: 5_000,
    headers: h,
  });
  const roundTripMs = performance.now() - started;

  // A request this page answers itself.
  nc.subscribe("page.self", { callback: (_, msg) => msg.respond(`self: ${msg.string()}`) });
  const self = await nc.request("page.self", "ping", { timeout: 5_000 });

  await nc.drain();
  return {
    userAgent: navigator.userAgent,
    echoed,
    reply: answer.string(),
    replyHeader: answer.headers?.get("Seen-Header") ?? null,
    selfReply: self.string(),
    roundTripMs,
    extensions,
  };
}

const result = run();
Object.assign(window, { natsTest: result });
const log = /** @type {HTMLElement} */ (document.getElementById("log"));
result.then(
  (r) => {
    log.textContent = JSON.stringify(r, null, 2);
  },
  (error) => {
    log.textContent = `failed: ${error}`;
  },
);
