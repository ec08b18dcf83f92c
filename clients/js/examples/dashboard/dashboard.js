// @ts-check
// A live dashboard on tern-client: the last value per key, over WebSocket (`/tern`).
//
// Publishers send each reading on `metrics.<key>` with the key as the coalescing key: when
// this page falls behind (a slow tab, a busy network), the broker replaces a reading still
// queued for it with the newer one of the same key instead of queueing both, so the page
// catches up on the latest values rather than on history. A (re)loaded page starts from the
// last 200 readings the log holds, and a reconnect resumes from its resume token.
//
// Open it with ?server=ws://HOST:PORT/tern (ternd --websocket-listen HOST:PORT). Serve the
// clients/js folder (after `npm run build`) so that ../../dist/index.js is reachable.

import { connect } from "../../dist/index.js";

const params = new URL(location.href).searchParams;
const server = params.get("server") ?? `ws://${location.hostname}:4225/tern`;
const status = /** @type {HTMLElement} */ (document.getElementById("status"));
const rows = /** @type {HTMLElement} */ (document.getElementById("rows"));
const simulate = /** @type {HTMLInputElement} */ (document.getElementById("simulate"));

/** The last reading per key: what the page shows (and what a test can read). */
/** @type {Map<string, { value: number, at: Date, sequence: bigint }>} */
const latest = new Map();
Object.assign(globalThis, { dashboard: { latest } });

function render() {
  const keys = [...latest.keys()].sort();
  rows.replaceChildren(
    ...keys.map((key) => {
      const r = latest.get(key);
      const tr = document.createElement("tr");
      for (const [text, cls] of [
        [key, ""],
        [r ? r.value.toFixed(2) : "", "value"],
        [r ? r.at.toLocaleTimeString() : "", ""],
        [r ? String(r.sequence) : "", ""],
      ]) {
        const td = document.createElement("td");
        td.textContent = text ?? "";
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }),
  );
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

const client = await connect({ servers: server, name: "dashboard" });
client.on("connected", (e) => (status.textContent = `connected to ${e.info.server}`));
client.on(
  "disconnected",
  (e) => (status.textContent = `disconnected (${e.reason}), reconnecting…`),
);
client.on("dropNotice", (e) => console.warn(`dropped ${e.count} readings (${e.source})`));
client.on("error", (e) => console.error(e.error));
status.textContent = `connected to ${server}`;

// Simulated readings: each key's newest value supersedes its older ones (coalescing).
/** @type {ReturnType<typeof setInterval> | undefined} */
let timer;
simulate.addEventListener("change", () => {
  clearInterval(timer);
  if (!simulate.checked) return;
  timer = setInterval(() => {
    for (const key of ["cpu", "memory", "disk", "net.in", "net.out"]) {
      const value = 50 + 50 * Math.sin(Date.now() / 2000 + key.length) + Math.random() * 5;
      client.publish(`metrics.${key}`, JSON.stringify({ value }), { coalescingKey: key });
    }
  }, 200);
});

const sub = client.subscribe("metrics.>", { start: { last: 200 } });
for await (const msg of sub) {
  const key = msg.subject.slice("metrics.".length);
  try {
    const { value } = /** @type {{ value?: unknown }} */ (msg.json());
    if (typeof value !== "number") throw new Error("no numeric value");
    latest.set(key, {
      value,
      at: new Date(Number(msg.timestamp / 1_000_000n)),
      sequence: msg.sequence,
    });
    scheduleRender();
  } catch (e) {
    console.warn(`metrics.${key}: unreadable reading: ${e}`);
  }
}
