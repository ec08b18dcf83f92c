// Byte streams to a broker: TCP or TLS through `node:net`/`node:tls` (Node only, imported
// on demand so the package loads in browsers), or WebSocket binary messages on `/tern`.
//
// Owns: opening one connection within a timeout, moving bytes (the frames written in one
// turn of the event loop as one socket write: `batched`), reporting its end once (at once
// when the client closes it: nothing read after that is handed on).
// Must never interpret the bytes, retry, or hold more than one turn's frames beyond what
// the socket itself holds (all of it counted in `buffered`, which the client bounds).

import { TernError } from "./errors.js";

/** TLS settings for Node (TCP `tls://` addresses and `wss://` through `ws`). */
export interface TlsOptions {
  /** PEM CA certificate(s) the server's certificate must chain to. */
  ca?: string | Uint8Array | (string | Uint8Array)[];
  /** PEM client certificate chain and key, for a broker that asks for one. */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** The name the certificate must carry (SNI), when not the address's host. */
  servername?: string;
  /** Default true. */
  rejectUnauthorized?: boolean;
}

export type ServerAddress =
  | { kind: "tcp"; host: string; port: number; tls: boolean; text: string }
  | { kind: "ws"; url: string; text: string };

/** Parses `tern://h:p`, `tls://h:p`, `h:p`, `ws://h:p[/tern]`, `wss://...`. */
export function parseServer(text: string): ServerAddress {
  const ws = /^(wss?):\/\/([^/]+)(\/.*)?$/i.exec(text);
  if (ws) {
    const path = ws[3] === undefined || ws[3] === "/" ? "/tern" : ws[3];
    const url = `${ws[1]!.toLowerCase()}://${ws[2]}${path}`;
    return { kind: "ws", url, text: url };
  }
  const tcp = /^(?:(tern|tls):\/\/)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?\/?$/i.exec(text);
  if (!tcp) {
    throw new TernError(
      "InvalidOption",
      `bad server address ${JSON.stringify(text)} (tern://host:port, tls://host:port or ws://host:port/tern)`,
    );
  }
  const port = tcp[3] === undefined ? 4224 : Number(tcp[3]);
  if (port < 1 || port > 65535) throw new TernError("InvalidOption", `bad port in ${text}`);
  const host = tcp[2]!.replace(/^\[|\]$/g, "");
  const tls = tcp[1]?.toLowerCase() === "tls";
  return { kind: "tcp", host, port, tls, text: `${tls ? "tls" : "tern"}://${tcp[2]}:${port}` };
}

export interface TransportEvents {
  data(bytes: Uint8Array): void;
  /** Once, when the connection ended; `error` says why when it was not a clean close. */
  closed(error?: Error): void;
  /** The socket took what was buffered. */
  drained(): void;
}

export interface Transport {
  write(bytes: Uint8Array): void;
  /** Bytes handed to the socket and not yet sent. */
  readonly buffered: number;
  close(): void;
  /**
   * Stop reading the socket (the sender is held back by TCP) until `resume`. Absent where
   * the platform cannot (a browser's WebSocket): data keeps coming.
   */
  pause?(): void;
  resume?(): void;
}

/** What the client uses of a W3C WebSocket (the browser's, Node 22's, or the `ws` package's). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number): void;
  /** Only the `ws` package's: stop and resume reading the socket. */
  pause?(): void;
  resume?(): void;
  /* eslint-disable @typescript-eslint/no-explicit-any -- each implementation types its events its own way */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

/** A WebSocket class. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: object,
) => WebSocketLike;

export interface OpenOptions {
  timeoutMs: number;
  tls?: TlsOptions;
  WebSocket?: WebSocketConstructor;
}

export async function openTransport(
  server: ServerAddress,
  options: OpenOptions,
  events: TransportEvents,
): Promise<Transport> {
  return server.kind === "ws"
    ? openWebSocket(server.url, options, events)
    : openTcp(server, options, events);
}

async function webSocketClass(options: OpenOptions): Promise<WebSocketConstructor> {
  if (options.WebSocket) return options.WebSocket;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global) return global;
  try {
    // Node before 22 has no WebSocket: the optional peer dependency `ws` gives one.
    const name = "ws";
    const ws = (await import(name)) as { WebSocket: WebSocketConstructor };
    return ws.WebSocket;
  } catch (cause) {
    throw new TernError(
      "Connect",
      "no WebSocket here: install the `ws` package or pass the WebSocket option",
      undefined,
      { cause },
    );
  }
}

async function openWebSocket(
  url: string,
  options: OpenOptions,
  events: TransportEvents,
): Promise<Transport> {
  const Ws = await webSocketClass(options);
  const socket =
    options.tls && !(globalThis as { window?: unknown }).window
      ? new Ws(url, [], { ...options.tls })
      : new Ws(url);
  socket.binaryType = "arraybuffer";
  return new Promise<Transport>((ok, fail) => {
    let open = false;
    let ended = false;
    const timer = setTimeout(() => {
      socket.close();
      finish(
        new TernError("Connect", `${url}: no WebSocket connection within ${options.timeoutMs} ms`),
      );
    }, options.timeoutMs);
    const finish = (error?: Error) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      if (open) events.closed(error);
      else fail(error ?? new TernError("Connect", `${url}: closed before it opened`));
    };
    socket.onopen = () => {
      clearTimeout(timer);
      open = true;
      ok(
        batched({
          // After the close a frame has nowhere to go: the close is reported on its own.
          write: (bytes) => {
            if (socket.readyState === 1) socket.send(bytes);
          },
          get buffered() {
            return socket.bufferedAmount;
          },
          // Over at once for the client: a network that is gone never answers the closing
          // handshake, which browsers wait a minute for (Chromium) and `ws` 30 s, and the
          // client must not wait that long to notice its heartbeat's verdict and reconnect.
          close: () => {
            socket.close(1000);
            finish(undefined);
          },
          ...(typeof socket.pause === "function" &&
            typeof socket.resume === "function" && {
              pause: () => socket.pause?.(),
              resume: () => socket.resume?.(),
            }),
        }),
      );
    };
    socket.onmessage = (e: { data: unknown }) => {
      if (ended) return; // closed by the client: what still comes is not read
      if (e.data instanceof ArrayBuffer) events.data(new Uint8Array(e.data));
      else finish(new TernError("Protocol", `${url}: a text WebSocket message on /tern`));
    };
    socket.onerror = () =>
      finish(new TernError(open ? "Disconnected" : "Connect", `${url}: WebSocket error`));
    socket.onclose = (e: { code: number; reason: string }) =>
      finish(
        e.code === 1000 || e.code === 1001
          ? undefined
          : new TernError(
              open ? "Disconnected" : "Connect",
              `${url}: WebSocket closed (${e.code}${e.reason ? ` ${e.reason}` : ""})`,
            ),
      );
  });
}

interface NodeSocket {
  write(b: Uint8Array): boolean;
  pause(): void;
  resume(): void;
  readonly writableLength: number;
  setNoDelay(on: boolean): void;
  destroy(): void;
  end(): void;
  on(event: string, listener: (...args: never[]) => void): void;
  once(event: string, listener: (...args: never[]) => void): void;
  removeAllListeners(event: string): void;
}

async function openTcp(
  server: Extract<ServerAddress, { kind: "tcp" }>,
  options: OpenOptions,
  events: TransportEvents,
): Promise<Transport> {
  if (typeof process === "undefined" || !process.versions?.node) {
    throw new TernError(
      "Connect",
      `${server.text}: TCP needs Node; in a browser use ws://host:port/tern`,
    );
  }
  const useTls = server.tls || options.tls !== undefined;
  let socket: NodeSocket;
  if (useTls) {
    const tls = await import("node:tls");
    const t = options.tls ?? {};
    socket = tls.connect({
      host: server.host,
      port: server.port,
      servername: t.servername ?? (/^[\d.:]+$/.test(server.host) ? undefined : server.host),
      ca: t.ca as string | undefined,
      cert: t.cert as string | undefined,
      key: t.key as string | undefined,
      rejectUnauthorized: t.rejectUnauthorized ?? true,
    }) as unknown as NodeSocket;
  } else {
    const net = await import("node:net");
    socket = net.connect({ host: server.host, port: server.port }) as unknown as NodeSocket;
  }
  return new Promise<Transport>((ok, fail) => {
    let open = false;
    let ended = false;
    const finish = (error?: Error) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      socket.destroy();
      if (open) events.closed(error);
      else fail(error ?? new TernError("Connect", `${server.text}: closed before it opened`));
    };
    const timer = setTimeout(
      () =>
        finish(
          new TernError("Connect", `${server.text}: no connection within ${options.timeoutMs} ms`),
        ),
      options.timeoutMs,
    );
    socket.once(useTls ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      open = true;
      socket.setNoDelay(true);
      ok(
        batched({
          write: (bytes) => {
            if (!ended) socket.write(bytes);
          },
          get buffered() {
            return socket.writableLength;
          },
          close: () => {
            socket.end();
            setTimeout(() => socket.destroy(), 1000).unref?.();
            // Over for the client now, as over WebSocket; what was written still goes out.
            if (!ended) {
              ended = true;
              events.closed(undefined);
            }
          },
          pause: () => socket.pause(),
          resume: () => socket.resume(),
        }),
      );
    });
    // A plain Uint8Array view of Node's Buffer (no copy): payloads are views of it, and
    // the client hands out Uint8Arrays, the same in Node as in browsers.
    socket.on("data", (chunk: Uint8Array) => {
      if (!ended) events.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
    socket.on("drain", () => events.drained());
    socket.on("error", (e: Error) =>
      finish(
        new TernError(
          open ? "Disconnected" : "Connect",
          `${server.text}: ${e.message}`,
          undefined,
          { cause: e },
        ),
      ),
    );
    socket.on("close", () => finish(undefined));
  });
}

/**
 * The frames written in one turn of the event loop go to the socket as one write (one
 * syscall, one WebSocket message) when the turn's synchronous work is done: a write per
 * frame would make a publish loop cost a socket write per message, most of its time. What
 * waits here counts in `buffered`, so the client's bounds see it; it goes out in order,
 * and before a close.
 */
function batched(raw: Transport): Transport {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const flush = () => {
    const chunks = pending;
    const total = pendingBytes;
    pending = [];
    pendingBytes = 0;
    if (chunks.length === 0) return;
    const first = chunks[0]!;
    if (chunks.length === 1) {
      raw.write(first);
      return;
    }
    // Frames encoded one after the other usually lie side by side in one slab
    // (`codec.ts`): then they go as one view, without being copied together.
    let end = first.byteOffset + first.length;
    let adjacent = true;
    for (let i = 1; i < chunks.length && adjacent; i++) {
      const c = chunks[i]!;
      adjacent = c.buffer === first.buffer && c.byteOffset === end;
      end += c.length;
    }
    if (adjacent) {
      raw.write(new Uint8Array(first.buffer, first.byteOffset, total));
      return;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    raw.write(out);
  };
  return {
    write(bytes) {
      if (pending.length === 0) queueMicrotask(flush);
      pending.push(bytes);
      pendingBytes += bytes.length;
    },
    get buffered() {
      return raw.buffered + pendingBytes;
    },
    close() {
      flush();
      raw.close();
    },
    ...(raw.pause && raw.resume && { pause: raw.pause, resume: raw.resume }),
  };
}
