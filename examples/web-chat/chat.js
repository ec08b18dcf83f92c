// A chat room over ternd's WebSocket port with the official NATS client (nats.ws).
//
// Live messages come from a plain NATS subscription on `chat.<room>`. What a tab did not see
// comes from ternd's log with a `$TERN.REPLAY` request (docs/protocol-text.md, "Catch-up"):
// the last 50 messages when the page opens, and, after a reconnect, every message stored
// since shortly before the connection dropped. Every message carries an id, so one that
// arrives both live and replayed is shown once.
//
// URL parameters: `server` (default ws://<this host>:8080), `room` (default lobby), `name`.

import { connect, createInbox, Events } from "nats.ws";

/** @typedef {{ id: string, from: string, text: string, sentAt: number }} ChatMessage */

const params = new URL(location.href).searchParams;
const server = params.get("server") ?? `ws://${location.hostname || "127.0.0.1"}:8080`;
const room = (params.get("room") ?? "lobby").replace(/[^A-Za-z0-9_-]/g, "") || "lobby";
const subject = `chat.${room}`;
/** How many messages a newly opened page shows from before it opened. */
const HISTORY = 50;
/**
 * A catch-up starts this long before the connection was seen to drop: a message can be
 * stored before the client notices the drop, and the tab's clock and the broker's can
 * differ a little. What this brings twice is dropped by id.
 */
const CATCH_UP_MARGIN_MS = 5_000;
/** How long to wait for a catch-up's end markers. */
const REPLAY_TIMEOUT_MS = 5_000;

const list = element("messages", HTMLUListElement);
const status = element("status", HTMLElement);
const form = element("send", HTMLFormElement);
const nameInput = element("name", HTMLInputElement);
const textInput = element("text", HTMLInputElement);
const submit = element("submit", HTMLButtonElement);
element("title", HTMLElement).textContent = `Tern chat: #${room}`;
document.title = `#${room} · Tern chat`;
nameInput.value = params.get("name") ?? `guest-${Math.floor(Math.random() * 1000)}`;

/** Ids of the messages on screen. */
const shown = new Set();
/** The connection, once made. */
/** @type {import("nats.ws").NatsConnection | null} */
let connection = null;

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
 * Shows the connection state in the header, and allows sending only while connected:
 * nats.ws does not keep what is published while it is disconnected.
 * @param {"connecting" | "online" | "offline"} state
 * @param {string} text
 */
function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
  submit.disabled = state !== "online";
}

/** @param {string} text */
function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

/** A random message id (crypto.randomUUID needs a secure context; this does not). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Decodes a chat message, or null for anything that is not one.
 * @param {Uint8Array} data
 * @returns {ChatMessage | null}
 */
function decode(data) {
  try {
    const m = JSON.parse(new TextDecoder().decode(data));
    const ok =
      typeof m.id === "string" &&
      typeof m.from === "string" &&
      typeof m.text === "string" &&
      typeof m.sentAt === "number";
    return ok ? m : null;
  } catch {
    return null;
  }
}

/**
 * Adds a message where its send time puts it, unless it is already shown.
 * @param {ChatMessage} m
 * @param {boolean} missed it came from a catch-up after a reconnect
 * @returns {boolean} whether it was new
 */
function show(m, missed) {
  if (shown.has(m.id)) {
    return false;
  }
  shown.add(m.id);
  const li = document.createElement("li");
  li.dataset.sentAt = String(m.sentAt);
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
  // Newest last; a message from a catch-up goes before any later one already shown.
  const later = [...list.querySelectorAll("li[data-sent-at]")].find(
    (other) => Number(/** @type {HTMLElement} */ (other).dataset.sentAt) > m.sentAt,
  );
  list.insertBefore(li, later ?? null);
  list.scrollTop = list.scrollHeight;
  return true;
}

/**
 * Asks ternd for the room's stored messages and shows those not yet shown. `start` is the
 * request's start as JSON text: `"last":50` or `"since_ns":<nanoseconds>` (written by hand:
 * a nanosecond time does not fit a JS number, and JSON.stringify cannot write a BigInt).
 * @param {import("nats.ws").NatsConnection} nc
 * @param {string} start
 * @param {boolean} missed
 * @returns {Promise<number | null>} how many were new, or null when the server has no catch-up
 */
async function catchUp(nc, start, missed) {
  const inbox = createInbox();
  const replies = nc.subscribe(inbox);
  await nc.flush(); // the inbox subscription is in place before the request
  nc.publish("$TERN.REPLAY", `{"subject":${JSON.stringify(subject)},${start}}`, {
    reply: inbox,
  });
  const timer = setTimeout(() => replies.unsubscribe(), REPLAY_TIMEOUT_MS);
  let added = 0;
  let markers = 0;
  try {
    for await (const msg of replies) {
      const h = msg.headers;
      if (h?.has("Tern-Replay-Done")) {
        // One end marker per shard; each says how many to expect.
        markers += 1;
        if (markers >= Number(h.get("Tern-Replay-Shards"))) {
          return added;
        }
      } else if (h?.hasError) {
        // 503: nobody answers $TERN.REPLAY (not ternd); 400 or 409: ternd refused it.
        console.warn("catch-up refused:", h.code, h.description, h.get("Tern-Error"));
        return null;
      } else {
        const m = decode(msg.data);
        if (m !== null && show(m, missed)) {
          added += 1;
        }
      }
    }
    return null; // timed out
  } finally {
    clearTimeout(timer);
    replies.unsubscribe();
  }
}

async function main() {
  setStatus("connecting", `connecting to ${server}…`);
  const nc = await connect({
    servers: server,
    name: `web-chat ${nameInput.value}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    waitOnFirstConnect: true,
  });
  connection = nc;

  nc.subscribe(subject, {
    callback: (error, msg) => {
      const m = error ? null : decode(msg.data);
      if (m !== null) {
        show(m, false);
      }
    },
  });
  setStatus("online", "online");
  const history = await catchUp(nc, `"last":${HISTORY}`, false);
  notice(history === null ? "history is not available on this server" : `#${room}`);

  /** When this tab saw its connection drop (ms since the epoch), while it is down. */
  let offlineSince = 0;
  for await (const s of nc.status()) {
    if (s.type === Events.Disconnect) {
      offlineSince = Date.now();
      setStatus("offline", "offline, reconnecting…");
    } else if (s.type === Events.Reconnect) {
      setStatus("online", "online");
      const since = BigInt(offlineSince - CATCH_UP_MARGIN_MS) * 1_000_000n;
      const missed = await catchUp(nc, `"since_ns":${since}`, true);
      if (missed === null) {
        notice("reconnected; what was said meanwhile is not available on this server");
      } else {
        notice(`reconnected: ${missed} missed message${missed === 1 ? "" : "s"} caught up`);
      }
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (text === "" || submit.disabled || connection === null) {
    return;
  }
  /** @type {ChatMessage} */
  const m = { id: newId(), from: nameInput.value, text, sentAt: Date.now() };
  connection.publish(subject, JSON.stringify(m));
  textInput.value = "";
});

main().catch((error) => {
  setStatus("offline", "failed");
  notice(`${error}`);
});
