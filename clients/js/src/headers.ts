// NATS header blocks (`NATS/1.0[ status[ description]]\r\n`, `Name: value\r\n` lines, `\r\n`):
// building one from the application's headers and reading one that arrived.
//
// Owns: the text form of a header block. Must never rewrite a block it did not build (a
// message's raw block stays available byte for byte as `Msg.rawHeaders`).

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Headers as the application gives them: name to value(s), or pairs in order. */
export type HeadersInit =
  Record<string, string | string[]> | Iterable<[string, string]> | MsgHeaders;

/** An ordered, case-insensitive view of a header block. */
export class MsgHeaders implements Iterable<[string, string]> {
  readonly #entries: [string, string][] = [];
  /** The status line's code (e.g. 503), when the block has one. */
  status?: number;
  /** The status line's description. */
  description?: string;

  constructor(init?: HeadersInit) {
    if (init === undefined) return;
    if (init instanceof MsgHeaders) {
      for (const [k, v] of init) this.append(k, v);
      return;
    }
    if (Symbol.iterator in init) {
      for (const [k, v] of init as Iterable<[string, string]>) this.append(k, v);
      return;
    }
    for (const [k, v] of Object.entries(init)) {
      for (const one of Array.isArray(v) ? v : [v]) this.append(k, one);
    }
  }

  append(name: string, value: string): void {
    if (!/^[!-9;-~]+$/.test(name))
      throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    if (/[\r\n]/.test(value)) throw new TypeError(`header ${name}: value has a line break`);
    this.#entries.push([name, value]);
  }
  set(name: string, value: string): void {
    this.delete(name);
    this.append(name, value);
  }
  delete(name: string): void {
    const lower = name.toLowerCase();
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      if (this.#entries[i]![0].toLowerCase() === lower) this.#entries.splice(i, 1);
    }
  }
  get(name: string): string | undefined {
    const lower = name.toLowerCase();
    return this.#entries.find(([k]) => k.toLowerCase() === lower)?.[1];
  }
  getAll(name: string): string[] {
    const lower = name.toLowerCase();
    return this.#entries.filter(([k]) => k.toLowerCase() === lower).map(([, v]) => v);
  }
  [Symbol.iterator](): Iterator<[string, string]> {
    return this.#entries[Symbol.iterator]();
  }

  /** The block's bytes. */
  encode(): Uint8Array {
    let s = "NATS/1.0";
    if (this.status !== undefined)
      s += ` ${this.status}${this.description ? ` ${this.description}` : ""}`;
    s += "\r\n";
    for (const [k, v] of this.#entries) s += `${k}: ${v}\r\n`;
    return encoder.encode(`${s}\r\n`);
  }

  /** Reads a block; lines it cannot read are skipped (the raw block is kept elsewhere). */
  static decode(block: Uint8Array): MsgHeaders {
    const h = new MsgHeaders();
    const lines = decoder.decode(block).split("\r\n");
    const status = /^NATS\/1\.0(?: (\d{3})(?: (.*))?)?$/.exec(lines[0] ?? "");
    if (status?.[1] !== undefined) {
      h.status = Number(status[1]);
      if (status[2]) h.description = status[2];
    }
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) h.#entries.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
    }
    return h;
  }
}
