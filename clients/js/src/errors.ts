// The client's one error type, `TernError`, and what each kind means.
//
// Owns: the kinds an application acts on and their messages. Must never carry a secret
// (token, password, seed) in a message.

import { errorCodeName } from "./codec.js";

export type TernErrorKind =
  /** A wait ran past its timeout. */
  | "Timeout"
  /** The connection was lost while the answer was outstanding: the outcome is unknown. */
  | "Disconnected"
  /** The offline buffer (also used while the socket is backed up) has no room: not sent. */
  | "OfflineBufferFull"
  /** The broker refused a publish (`PUBLISH_ACK` refused) or a subscription (`ERROR` with its sid). */
  | "Refused"
  /** The broker sent an `ERROR` (fatal ones end the connection). */
  | "Server"
  /** A request reached no subscriber (a 503 status reply). */
  | "NoResponders"
  | "InvalidSubject"
  | "InvalidOption"
  | "PayloadTooLarge"
  /** No connection could be made (every server was tried). */
  | "Connect"
  /** The broker sent bytes that are not the protocol: the connection was dropped. */
  | "Protocol"
  | "Credentials"
  /** The subscription ended (unsubscribed, drained, or its max reached). */
  | "Unsubscribed"
  /** The client is closed. */
  | "Closed";

export class TernError extends Error {
  override name = "TernError";
  constructor(
    readonly kind: TernErrorKind,
    message: string,
    /** The protocol error code, for `Refused` and `Server`. */
    readonly code?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The code's name (`PermissionViolation`), when there is a code. */
  get codeName(): string | undefined {
    return this.code === undefined ? undefined : errorCodeName(this.code);
  }

  static server(kind: "Refused" | "Server", code: number, message: string): TernError {
    return new TernError(
      kind,
      `${errorCodeName(code)} (0x${code.toString(16).padStart(4, "0")}): ${message}`,
      code,
    );
  }
}
