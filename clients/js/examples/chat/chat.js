// @ts-check
// The web chat (examples/web-chat, which runs on NATS over WebSocket) rewritten on
// tern-client: Tern's binary protocol over ws://HOST:PORT/tern. Same page, same rooms,
// names and history; what changes is how a tab that was offline catches up.
//
// - One subscription on `chat.<room>` starts from the room's last 50 messages in the log,
//   then goes live. The client keeps its resume token (the last sequence seen per shard):
//   when a lost connection comes back, it resubscribes from that token before sending
//   anything else, and the broker replays exactly what the tab missed, then goes live. So
//   the page needs no catch-up request, no time margin and no de-duplication of its own:
//   every message arrives once. Those that were missed are marked with a yellow edge.
// - A network that vanishes without closing the socket (a laptop lid, a dead Wi-Fi) is
//   noticed by the heartbeat: PING after 5 s of silence, offline after 10 s.
// - Sending works offline too: a message waits in the client's bounded offline buffer and
//   goes after the resubscription. Each carries an id, sent as the publish's message id:
//   one that was written to a connection that then died is sent again, and the broker,
//   which remembers ids for two minutes, stores it once.
// - Messages are placed by where the broker stored them (its receive time, then shard and
//   sequence): every tab shows the same order, however its messages arrived.
// - The header shows who is in the room (presence); the page's member token keeps it the
//   same member across a reconnection within the broker's grace period.
//
// URL parameters: `server` (default ws://<this host>:4225/tern), `room` (default lobby),
// `name`.

import { TernError, connect } from "../../dist/index.js";

/** @typedef {{ id: string, from: string, text: string, sentAt: number }} ChatMessage */
/** @typedef {import("../../dist/index.js").Client} Client */
/** @typedef {import("../../dist/index.js").Msg} Msg */

const params = new URL(location.href).searchParams;
const server = params.get("server") ?? `ws://${location.hostname || "127.0.0.1"}:4225/tern`;
const room = (params.get("room") ?? "lobby").replace(/[^A-Za-z0-9_-]/g, "") || "lobby";
const subject = `chat.${room}`;
/** How many messages a newly opened page shows from before it opened. */
const HISTORY = 50;
/** How many times a message is sent again after its connection was lost under it. */
const SEND_ATTEMPTS = 20;

const list = element("messages", HTMLUListElement);
const status = element("status", HTMLElement);
const membersLine = element("members", HTMLElement);
const form = element("send", HTMLFormElement);
const nameInput = element("name", HTMLInputElement);
const textInput = element("text", HTMLInputElement);
const submit = element("submit", HTMLButtonElement);
element("title", HTMLElement).textContent = `Tern chat: #${room}`;
document.title = `#${room} · Tern chat`;
nameInput.value = params.get("name") ?? `guest-${Math.floor(Math.random() * 1000)}`;

/** Own messages not yet back from the broker, by id: their "sending…" lines. */
/** @type {Map<string, HTMLLIElement>} */
const pending = new Map();
/** The notice of the current (or last) time offline, counting what was caught up. */
/** @type {{ li: HTMLLIElement, since: Date, back: Date | null, missed: number } | null} */
let outage = null;
/** @type {Client | null} */
let client = null;

/**
 * The element with this id, checked to be of this type.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function element(id, type) {
  const found = document.getElementById(id);
  if (!(found instanceof type)) {
    throw new Error(`no #${id}`);
  }
  return found;
}

/**
 * Shows the connection state in the header; sending stays possible offline (the client
 * keeps what is sent until it is connected again).
 * @param {"connecting" | "online" | "offline"} state
 * @param {string} text
 */
function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = pending.size > 0 ? `${text} · ${pending.size} to send` : text;
}

function showState() {
  if (client === null) return;
  if (client.info) setStatus("online", "online");
  else setStatus("offline", "offline, reconnecting…");
}

/**
 * A line that is not a message, placed after everything shown so far.
 * @param {string} text
 */
function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  list.insertBefore(li, firstPending());
  list.scrollTop = list.scrollHeight;
  return li;
}

/** Says when the page was offline, and how many messages it caught up on since. */
function showOutage() {
  if (outage === null) return;
  const since = outage.since.toLocaleTimeString();
  if (outage.back === null) {
    outage.li.textContent = `offline since ${since}: what is said meanwhile will follow`;
    return;
  }
  const n = outage.missed;
  outage.li.textContent = `offline ${since}–${outage.back.toLocaleTimeString()}: ${n} missed message${n === 1 ? "" : "s"} caught up`;
}

/** The first "sending…" line: messages and notices go above them. */
function firstPending() {
  return list.querySelector("li.pending, li.failed");
}

/** A random message id (crypto.randomUUID needs a secure context; this does not). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Decodes a chat message, or null for anything that is not one.
 * @param {Msg} msg
 * @returns {ChatMessage | null}
 */
function decode(msg) {
  try {
    const m = /** @type {Partial<ChatMessage>} */ (msg.json());
    const ok =
      typeof m.id === "string" &&
      typeof m.from === "string" &&
      typeof m.text === "string" &&
      typeof m.sentAt === "number";
    return ok ? /** @type {ChatMessage} */ (m) : null;
  } catch {
    return null;
  }
}

/**
 * Whether line `li` was stored before message `msg`: by the broker's receive time across
 * shards, by sequence within one.
 * @param {HTMLElement} li
 * @param {Msg} msg
 */
function storedBefore(li, msg) {
  const shard = Number(li.dataset.shard);
  if (shard === msg.shard) return BigInt(li.dataset.seq ?? "0") < msg.sequence;
  const at = BigInt(li.dataset.ts ?? "0");
  return at !== msg.timestamp ? at < msg.timestamp : shard < msg.shard;
}

/**
 * Shows a message where the broker's order puts it (nearly always last).
 * @param {Msg} msg
 * @param {ChatMessage} m
 * @param {boolean} missed it came from the catch-up after a reconnection
 */
function show(msg, m, missed) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.id = m.id;
  li.dataset.ts = String(msg.timestamp);
  li.dataset.shard = String(msg.shard);
  li.dataset.seq = String(msg.sequence);
  li.classList.toggle("mine", m.from === nameInput.value);
  li.classList.toggle("missed", missed);
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = m.from;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.text;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = new Date(m.sentAt).toLocaleTimeString();
  li.append(from, text, time);
  if (missed) {
    li.title = "sent while you were offline";
  }
  // The first line stored after it, scanning back from the newest.
  /** @type {Element | null} */
  let next = null;
  const shown = /** @type {HTMLElement[]} */ ([...list.querySelectorAll("li.msg")]);
  for (let i = shown.length - 1; i >= 0; i--) {
    const line = /** @type {HTMLElement} */ (shown[i]);
    if (storedBefore(line, msg)) break;
    next = line;
  }
  list.insertBefore(li, next ?? firstPending());
  list.scrollTop = list.scrollHeight;
}

/**
 * Sends a message: shown as "sending…" until it comes back through the subscription. If
 * the connection it was written to is lost (the outcome is unknown) it is sent again with
 * the same id, which the broker stores once.
 * @param {Client} c
 * @param {ChatMessage} m
 */
async function send(c, m) {
  const li = document.createElement("li");
  li.className = "pending";
  li.textContent = `${m.text} (sending…)`;
  list.append(li);
  list.scrollTop = list.scrollHeight;
  pending.set(m.id, li);
  showState();
  for (let attempt = 1; ; attempt++) {
    try {
      await c.publishAcked(subject, JSON.stringify(m), { messageId: m.id });
      return;
    } catch (e) {
      const retry =
        e instanceof TernError &&
        (e.kind === "Disconnected" || e.kind === "Timeout") &&
        attempt < SEND_ATTEMPTS;
      if (!retry) {
        pending.delete(m.id);
        li.className = "failed";
        li.textContent = `${m.text} (not sent: ${e instanceof Error ? e.message : String(e)})`;
        showState();
        return;
      }
    }
  }
}

/** Connects, trying again every few seconds until the server answers. */
async function open() {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connect({
        servers: server,
        name: `chat ${nameInput.value}`,
        reconnect: { baseMs: 250, capMs: 2_000 },
        pingIntervalMs: 5_000,
        serverTimeoutMs: 10_000,
        ackTimeoutMs: 60_000,
      });
    } catch (e) {
      if (e instanceof TernError && e.kind === "Server") throw e; // refused: say so
      setStatus("offline", `cannot reach ${server}, retrying…`);
      await new Promise((ok) => setTimeout(ok, Math.min(5_000, 500 * 2 ** attempt)));
    }
  }
}

/**
 * Keeps the header's list of who is here.
 * @param {import("../../dist/index.js").PresenceView} presence
 */
async function watchPresence(presence) {
  for await (const _ of presence) {
    const names = (presence.members() ?? []).map((m) => {
      try {
        const info = JSON.parse(new TextDecoder().decode(m.info));
        return typeof info.name === "string" ? info.name : m.user;
      } catch {
        return m.user;
      }
    });
    membersLine.textContent = `${presence.count} here: ${names.join(", ")}`;
  }
}

async function main() {
  setStatus("connecting", `connecting to ${server}…`);
  const c = await open();
  client = c;
  c.on("connected", () => {
    if (outage) outage.back = new Date();
    showOutage();
    showState();
  });
  c.on("disconnected", () => {
    outage = { li: notice(""), since: new Date(), back: null, missed: 0 };
    showOutage();
    showState();
  });
  c.on("gapNotice", () => {
    notice("some messages of this room are no longer in the server's log and cannot be shown");
  });
  c.on("error", (e) => console.error(e.error));
  showState();
  submit.disabled = false;
  notice(`#${room}`);

  const sub = c.subscribe(subject, {
    start: { last: HISTORY },
    presence: JSON.stringify({ name: nameInput.value }),
    presenceEvents: true,
  });
  if (sub.presence) void watchPresence(sub.presence);
  for await (const msg of sub) {
    const m = decode(msg);
    if (m === null) continue;
    const mine = pending.get(m.id);
    if (mine) {
      pending.delete(m.id);
      mine.remove();
      showState();
    }
    // Replayed after a reconnection: missed while offline (the history at the start is
    // replayed too, before any outage; and what this tab sent itself was not missed).
    const missed = msg.replayed && outage !== null && mine === undefined;
    show(msg, m, missed);
    if (missed && outage) {
      outage.missed += 1;
      showOutage();
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (text === "" || client === null) {
    return;
  }
  /** @type {ChatMessage} */
  const m = { id: newId(), from: nameInput.value, text, sentAt: Date.now() };
  textInput.value = "";
  void send(client, m);
});

main().catch((error) => {
  setStatus("offline", "failed");
  notice(`${error}`);
});
