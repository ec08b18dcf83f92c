// @ts-check
// The web chat on tern-client: a room whose page shows every message once, in order, even
// after its network was gone for a while.
//
// - The subscription starts from the last 50 messages of the log and keeps its resume
//   token: when the connection comes back (after 30 s offline, or a broker restart), the
//   client resubscribes from the token before anything else, and the broker replays what
//   was said meanwhile, then goes live, with no gap and no duplicate (replayed messages are
//   marked with a yellow edge). If the log no longer holds part of it, a gap notice says so.
// - What is typed while offline waits in the client's bounded offline buffer and is sent
//   after the resubscription (the Send button says when the buffer is full).
// - The page joins the room's presence and shows who is there; its member token keeps it
//   the same member across a reconnection within the broker's grace window.
//
// Open ?server=ws://HOST:PORT/tern&room=lobby&name=ann (serve clients/js after `npm run build`).

import { connect } from "../../dist/index.js";

const params = new URL(location.href).searchParams;
const server = params.get("server") ?? `ws://${location.hostname}:4225/tern`;
const room = `chat.${params.get("room") ?? "lobby"}`;
const name = params.get("name") ?? "guest";

const status = /** @type {HTMLElement} */ (document.getElementById("status"));
const membersLine = /** @type {HTMLElement} */ (document.getElementById("members"));
const list = /** @type {HTMLElement} */ (document.getElementById("messages"));
const form = /** @type {HTMLFormElement} */ (document.getElementById("send"));
const input = /** @type {HTMLInputElement} */ (document.getElementById("text"));

/** What the page showed, for tests: "name: text" in order. */
/** @type {string[]} */
const shown = [];
Object.assign(globalThis, { chat: { shown } });

const client = await connect({ servers: server, name });
client.on("connected", (e) => (status.textContent = `in ${room} as ${name} (${e.info.server})`));
client.on("disconnected", () => (status.textContent = "offline: messages will catch up on return"));
client.on("gapNotice", (e) => {
  status.textContent = `the log no longer holds messages ${e.requested}..${e.oldest - 1n} of shard ${e.shard}`;
});
client.on("error", (e) => console.error(e.error));
status.textContent = `in ${room} as ${name}`;

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!input.value) return;
  try {
    client.publish(room, JSON.stringify({ from: name, text: input.value }));
    input.value = "";
  } catch (e) {
    status.textContent = String(e instanceof Error ? e.message : e);
  }
});

const sub = client.subscribe(room, {
  start: { last: 50 },
  presence: JSON.stringify({ name }),
  presenceEvents: true,
});

const presence = sub.presence;
if (presence) {
  void (async () => {
    for await (const _ of presence) {
      const names = (presence.members() ?? []).map((m) => {
        try {
          return (
            /** @type {{ name?: string }} */ (JSON.parse(new TextDecoder().decode(m.info))).name ??
            m.user
          );
        } catch {
          return m.user;
        }
      });
      membersLine.textContent = `${presence.count} here: ${names.join(", ")}`;
    }
  })();
}

for await (const msg of sub) {
  /** @type {{ from?: string, text?: string }} */
  let body;
  try {
    body = msg.json();
  } catch {
    body = { from: "?", text: msg.string() };
  }
  const line = `${body.from ?? "?"}: ${body.text ?? ""}`;
  shown.push(line);
  const li = document.createElement("li");
  li.textContent = line;
  if (msg.replayed) li.className = "caught-up";
  list.append(li);
}
