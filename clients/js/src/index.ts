// The package's entry point: the client, its options and types, and the codec's public
// values. Owns nothing itself and must never have side effects on import (the package
// loads in browsers: Node modules are imported only when a TCP address is used).

export { connect, Client, CLIENT_VERSION } from "./client.js";
export type {
  ConnectOptions,
  PublishOptions,
  PublishAck,
  Start,
  SubscribeOptions,
  RequestOptions,
  PresencePage,
  ServerInfo,
  ClientEvent,
  DisconnectReason,
  EventStream,
} from "./client.js";
export { Subscription, Msg, PresenceView, ResumeTracker } from "./subscription.js";
export type { PresenceEvent, SubscriptionCallback } from "./subscription.js";
export { TernError } from "./errors.js";
export type { TernErrorKind } from "./errors.js";
export { MsgHeaders } from "./headers.js";
export type { HeadersInit } from "./headers.js";
export { backoffDelay } from "./backoff.js";
export type { ReconnectPolicy } from "./backoff.js";
export type { TlsOptions, WebSocketConstructor } from "./transport.js";
export { nkeySigner, parseCreds } from "./nkey.js";
export type { Creds, NKeySigner } from "./nkey.js";
export { ErrorCode, errorCodeName } from "./codec.js";
export type { Member, ResumeToken, SequenceRange } from "./codec.js";
