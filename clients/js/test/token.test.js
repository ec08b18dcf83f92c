// @ts-check
// Token refresh against a real ternd that takes JWT connection tokens (HS256, no leeway):
// a connection whose JWT lapses is closed with AuthenticationExpired, one refreshed in time
// (`refreshToken`, an AUTH frame) stays, and its reconnections carry the new token (the old
// one has expired by then, so only the new one gets back in); a refused refresh rejects
// with the broker's AuthorizationViolation, and a refresh made while disconnected is what
// the next connection uses.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";
import { ErrorCode, TernError, connect } from "tern-client";
import { Ternd, recordEvents, sleep, until, within } from "./harness.js";

const SECRET = "tern-client-js-test-secret";

/**
 * An HS256 JWT for `sub` that expires in `seconds` (whole seconds: `exp` is Unix seconds).
 * @param {string} sub
 * @param {number} seconds
 * @param {string} [secret]
 */
function jwt(sub, seconds, secret = SECRET) {
  /** @param {object} o */
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${part({ alg: "HS256", typ: "JWT" })}.${part({
    sub,
    exp: Math.floor(Date.now() / 1000) + seconds,
  })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/**
 * @param {unknown} e
 * @param {number} code
 */
function isServerError(e, code) {
  assert.ok(e instanceof TernError, `a TernError, got ${String(e)}`);
  assert.equal(e.kind, "Server", e.message);
  assert.equal(e.code, code, e.message);
  return true;
}

/** @type {Ternd} */
let ternd;
before(async () => {
  ternd = await Ternd.start();
  const config = join(ternd.dir, "jwt.toml");
  await writeFile(config, `[jwt]\nhs256_secret = "${SECRET}"\nleeway = "0s"\n`);
  await ternd.stop();
  // Refused reconnections are what the second test makes: no lockout of the address.
  ternd.extra = ["--config", config, "--auth-failures-per-ip", "0"];
  await ternd.run();
});
after(async () => {
  await ternd?.close();
});

test("a JWT refreshed before it expires keeps its connection; reconnections use the new token", async () => {
  const lapsing = await connect({ servers: ternd.tcpUrl, token: jwt("dana", 2), reconnect: false });
  const refreshed = await connect({
    servers: ternd.wsUrl,
    WebSocket,
    token: jwt("dana", 2),
    reconnect: { baseMs: 20, capMs: 200 },
  });
  const events = recordEvents(refreshed);
  await refreshed.refreshToken(jwt("dana", 3600));

  const error = await within(lapsing.closed, 10_000, "the lapsing connection to close");
  isServerError(error, ErrorCode.AuthenticationExpired);
  // Both first tokens had the same expiry: give the broker's timer a moment past it.
  await sleep(1000);
  await refreshed.publishAcked("still.here", "yes");
  assert.deepEqual(
    events.events.filter((e) => e.type === "disconnected"),
    [],
    "the refreshed connection was never closed",
  );

  // A broker restart: the first token has expired, so only the refreshed one gets back in.
  await ternd.stop();
  await ternd.run();
  await events.seen("resumed", 1, 15_000);
  await refreshed.publishAcked("back.again", "yes");
  refreshed.close();

  // A token signed with another key is refused at connect.
  await assert.rejects(
    connect({ servers: ternd.tcpUrl, token: jwt("dana", 3600, "another-secret") }),
    (e) => isServerError(e, ErrorCode.AuthorizationViolation),
  );
});

test("a refused refresh rejects; a refresh while disconnected is what the next connection uses", async () => {
  const c = await connect({
    servers: ternd.tcpUrl,
    token: jwt("erin", 3600),
    reconnect: { baseMs: 20, capMs: 100 },
  });
  const events = recordEvents(c);
  const sub = c.subscribe("erin.inbox");
  await sub.ready;

  await assert.rejects(c.refreshToken(jwt("erin", 3600, "another-secret")), (e) =>
    isServerError(e, ErrorCode.AuthorizationViolation),
  );
  // The reconnections carry the refused token and are refused in turn.
  await until(
    () =>
      events.events.some(
        (e) =>
          e.type === "reconnecting" &&
          e.error instanceof TernError &&
          e.error.code === ErrorCode.AuthorizationViolation,
      ),
    10_000,
    "a reconnection refused with AuthorizationViolation",
  );
  assert.equal(c.info, undefined, "not connected");

  await c.refreshToken(jwt("erin", 3600), 10_000);
  assert.ok(c.info, "connected again");
  await events.seen("resumed", 1, 5_000);
  // The subscription came back with it.
  await c.publishAcked("erin.inbox", "welcome back");
  assert.equal((await sub.next(5_000)).string(), "welcome back");
  c.close();
  await assert.rejects(c.refreshToken("x"), (e) => e instanceof TernError && e.kind === "Closed");
});
