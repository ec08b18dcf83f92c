// NKey user seeds (`SU...`) and NATS `.creds` files: the public key a seed stands for, and
// signing a CHALLENGE nonce, with WebCrypto's Ed25519 (Node 20+, current browsers).
//
// Owns: seed decoding (base32, CRC16, the user-seed prefix), the signature, and reading a
// `.creds` file's two blocks (its user JWT and its seed). Must never put a seed or a JWT,
// or any part of them, in an error message or anywhere but the key it imports; errors name
// where the secret came from (the option, or the file's path), never its value.

import { TernError } from "./errors.js";

const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const PREFIX_SEED = 18 << 3;
const PREFIX_USER = 20 << 3;

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function base32Decode(s: string, origin: string): Uint8Array {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const c of s) {
    const v = B32.indexOf(c);
    if (v < 0) throw new TernError("Credentials", `${origin}: not base32`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}

function base32Encode(b: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of b) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function base64url(b: Uint8Array): string {
  let s = "";
  for (const byte of b) s += String.fromCharCode(byte);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(s: string): Uint8Array {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}

export interface NKeySigner {
  /** The user's public key, `U...`. */
  publicKey: string;
  /** The nonce's bytes signed, base64url without padding. */
  sign(nonce: string): Promise<string>;
}

/**
 * Reads a user seed (`SU...`); `Credentials` error when it is not one. `origin` names
 * where the seed came from in that error (default `nkey seed`), never the seed itself.
 */
export async function nkeySigner(seed: string, origin = "nkey seed"): Promise<NKeySigner> {
  const raw = base32Decode(seed.trim(), origin);
  if (raw.length !== 36) throw new TernError("Credentials", `${origin}: wrong length`);
  const body = raw.subarray(0, 34);
  const crc = raw[34]! | (raw[35]! << 8);
  if (crc16(body) !== crc) throw new TernError("Credentials", `${origin}: bad checksum`);
  if (
    (raw[0]! & 0xf8) !== PREFIX_SEED ||
    (((raw[0]! & 7) << 5) | ((raw[1]! & 0xf8) >> 3)) !== PREFIX_USER
  ) {
    throw new TernError("Credentials", `${origin}: not a user seed (SU...)`);
  }
  const pkcs8 = new Uint8Array(48);
  pkcs8.set([
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
  ]);
  pkcs8.set(raw.subarray(2, 34), 16);
  const subtle = globalThis.crypto?.subtle;
  if (!subtle)
    throw new TernError(
      "Credentials",
      "nkey: no WebCrypto here (a secure context is needed in browsers)",
    );
  let key: CryptoKey;
  let x: string | undefined;
  try {
    key = await subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    x = (await subtle.exportKey("jwk", key)).x;
  } catch (cause) {
    throw new TernError(
      "Credentials",
      "nkey: this platform's WebCrypto has no Ed25519",
      undefined,
      { cause },
    );
  }
  if (x === undefined) throw new TernError("Credentials", "nkey: no public key");
  const pub = new Uint8Array(35);
  pub[0] = PREFIX_USER;
  pub.set(fromBase64url(x), 1);
  const c = crc16(pub.subarray(0, 33));
  pub[33] = c & 0xff;
  pub[34] = c >> 8;
  const signingKey = key;
  return {
    publicKey: base32Encode(pub),
    sign: async (nonce) =>
      base64url(
        new Uint8Array(
          await subtle.sign({ name: "Ed25519" }, signingKey, new TextEncoder().encode(nonce)),
        ),
      ),
  };
}

/** What a NATS `.creds` file holds. */
export interface Creds {
  /** The `NATS USER JWT` block, when there is one: sent as the token. */
  jwt: string | undefined;
  /** The `USER NKEY SEED` block: it answers the CHALLENGE. */
  seed: string;
}

/**
 * The first non-empty line after a `-----BEGIN <name>-----` line and before the next
 * `---` line (its END), as `nsc` writes the blocks; undefined when there is none.
 */
function credsBlock(lines: string[], name: string): string | undefined {
  const begin = lines.findIndex(
    (l) => l.startsWith("---") && l.includes("BEGIN") && l.includes(name),
  );
  if (begin < 0) return undefined;
  for (const line of lines.slice(begin + 1)) {
    if (line.startsWith("---")) return undefined;
    if (line !== "") return line;
  }
  return undefined;
}

/**
 * Parses the text of a NATS `.creds` file: its `USER NKEY SEED` block (required) and its
 * `NATS USER JWT` block (optional), with the comments `nsc` puts between them. `origin`
 * names the file in the `Credentials` error when there is no seed.
 */
export function parseCreds(text: string, origin = "creds"): Creds {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const seed = credsBlock(lines, "USER NKEY SEED");
  if (seed === undefined) throw new TernError("Credentials", `${origin}: no USER NKEY SEED block`);
  return { jwt: credsBlock(lines, "NATS USER JWT"), seed };
}

/**
 * Reads a `.creds` file (Node only: `node:fs` is imported here, on demand, so the package
 * still loads in browsers, where the file's text goes in the `creds` option instead).
 */
export async function readCredsFile(path: string): Promise<Creds> {
  if (typeof process === "undefined" || !process.versions?.node) {
    throw new TernError(
      "Credentials",
      `credentials file ${path}: files need Node; in a browser pass the file's text as creds`,
    );
  }
  const fs = await import("node:fs/promises");
  let text: string;
  try {
    text = await fs.readFile(path, "utf8");
  } catch (cause) {
    const code = (cause as { code?: string }).code;
    throw new TernError(
      "Credentials",
      `credentials file ${path}: cannot read${code ? ` (${code})` : ""}`,
      undefined,
      { cause },
    );
  }
  return parseCreds(text, `credentials file ${path}`);
}
