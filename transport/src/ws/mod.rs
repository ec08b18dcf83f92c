//! WebSocket (RFC 6455), server side, over any byte stream: plain TCP or TLS.
//!
//! Owns: one connection's WebSocket life (`WebSocket`): the upgrade request
//! (`handshake`), then client frames in and server frames out (`frame`), with
//! permessage-deflate when negotiated (`deflate`); the settings shared by a listener's
//! connections ([`WsConfig`], [`WsLimits`], [`AllowedOrigins`]).
//!
//! Never: touches the socket or the stream beneath: it hands its replies (the 101 or the
//! HTTP error, pongs, close frames) to the stream's queue and its data frames to the
//! stream's `send`, so the same code runs over TCP and over TLS. It never delivers
//! messages: only the byte stream they carry, whatever their type or fragmentation (the
//! NATS text protocol may arrive split across frames or several commands per frame).

pub(crate) mod deflate;
pub(crate) mod frame;
pub(crate) mod handshake;
pub mod origin;
mod utf8;

use std::sync::Arc;

pub use handshake::Upgrade;
pub use origin::{AllowedOrigins, OriginError};

use crate::error::{CloseCode, TransportError};
use crate::stream::ByteStream;
use crate::{PeerClosed, ReadOutcome};
use deflate::Deflater;
use frame::{opcode, Decoder, FrameHeader};

/// The limits of a WebSocket connection; every one has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// The upgrade request's size, header block included; past it: 400. Default
    /// [`WsLimits::DEFAULT_MAX_HANDSHAKE`].
    pub max_handshake: usize,
    /// The largest frame or message from the client, counted on the wire and, when
    /// compressed, once inflated; past it: close 1009. Also what one `read` appends at most
    /// before it stops early (plus the message in progress). Default
    /// [`WsLimits::DEFAULT_MAX_MESSAGE`].
    pub max_message: usize,
    /// Outgoing messages shorter than this are sent uncompressed even when
    /// permessage-deflate was negotiated (compressing them costs more than it saves).
    /// Default [`WsLimits::DEFAULT_COMPRESS_MIN`].
    pub compress_min: usize,
}

impl WsLimits {
    /// 8 KiB.
    pub const DEFAULT_MAX_HANDSHAKE: usize = 8 * 1024;
    /// 1 MiB, the NATS default `max_payload` and room for its control line.
    pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;
    /// 64 bytes, nats-server's `wsCompressThreshold`.
    pub const DEFAULT_COMPRESS_MIN: usize = 64;
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_handshake: Self::DEFAULT_MAX_HANDSHAKE,
            max_message: Self::DEFAULT_MAX_MESSAGE,
            compress_min: Self::DEFAULT_COMPRESS_MIN,
        }
    }
}

/// The settings of a WebSocket listener, shared by its connections (in an `Arc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// The paths that upgrade; any other gets 404. [`Upgrade::path`] tells the caller
    /// which one a connection asked for. Default `["/", "/tern"]`.
    pub paths: Vec<String>,
    /// Origins allowed to upgrade (`scheme://host[:port]`); empty = any. Default empty.
    pub allowed_origins: AllowedOrigins,
    /// Accept permessage-deflate when the client offers it. Default off, as in
    /// nats-server.
    pub compression: bool,
    /// Limits.
    pub limits: WsLimits,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            paths: vec!["/".to_owned(), "/tern".to_owned()],
            allowed_origins: AllowedOrigins::default(),
            compression: false,
            limits: WsLimits::default(),
        }
    }
}

/// Where a connection is.
enum Phase {
    /// Reading the upgrade request (bounded by `max_handshake`).
    Handshake { request: Vec<u8> },
    /// Frames both ways. The deflater is created with the first compressed message.
    Open {
        decoder: Box<Decoder>,
        deflater: Option<Box<Deflater>>,
    },
    /// After a close frame either way, or an error: reads are ignored, writes refused.
    Closed,
}

/// The WebSocket state above the stream, apart from it so a read can lend the stream a
/// sink that borrows this.
struct Core {
    config: Arc<WsConfig>,
    phase: Phase,
    upgrade: Option<Upgrade>,
    /// Replies for the peer (HTTP answer, control frames), handed to the stream after each
    /// read.
    replies: Vec<u8>,
    /// The upgrade completed during the current read.
    upgraded_now: bool,
    /// The peer's close frame arrived during the current read.
    peer_closed: Option<Option<CloseCode>>,
}

/// One server-side WebSocket connection over the byte stream `S`.
pub(crate) struct WebSocket<S> {
    stream: S,
    core: Core,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("upgrade", &self.core.upgrade)
            .finish_non_exhaustive()
    }
}

impl<S: ByteStream> WebSocket<S> {
    /// A connection that waits for the upgrade request.
    pub(crate) fn new(stream: S, config: Arc<WsConfig>) -> Self {
        Self {
            stream,
            core: Core {
                config,
                phase: Phase::Handshake {
                    request: Vec::new(),
                },
                upgrade: None,
                replies: Vec::new(),
                upgraded_now: false,
                peer_closed: None,
            },
        }
    }

    /// The stream beneath.
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// What the upgrade request asked for, once it is accepted.
    pub(crate) fn upgrade(&self) -> Option<&Upgrade> {
        self.core.upgrade.as_ref()
    }

    pub(crate) fn read(
        &mut self,
        socket_in: &[u8],
        app_in: &mut Vec<u8>,
    ) -> Result<ReadOutcome, TransportError> {
        let Self { stream, core } = self;
        core.upgraded_now = false;
        core.peer_closed = None;
        let app_start = app_in.len();
        let result = stream.read_into(socket_in, &mut |bytes| {
            let taken = app_in.len() - app_start;
            let budget = core.config.limits.max_message.saturating_sub(taken);
            core.take(bytes, app_in, budget)
        });
        // Replies go out whatever happened: a 400, a close frame with the error's code.
        if !core.replies.is_empty() {
            stream.queue(&core.replies)?;
            core.replies.clear();
        }
        // The WebSocket is over (a close frame, an error, a refusal): the stream says
        // goodbye right behind its last words (a TLS close_notify; idempotent).
        if matches!(core.phase, Phase::Closed) {
            stream.close();
        }
        let read = result?;
        Ok(ReadOutcome {
            consumed: read.consumed,
            again: read.again || read.consumed < socket_in.len(),
            wants_write: stream.has_pending(),
            handshake_done: core.upgraded_now,
            peer_closed: match core.peer_closed {
                Some(code) => Some(PeerClosed::WebSocket(code)),
                None if read.peer_closed => Some(PeerClosed::TlsCloseNotify),
                None => None,
            },
        })
    }

    pub(crate) fn write(
        &mut self,
        app_out: &[u8],
        socket_out: &mut Vec<u8>,
    ) -> Result<(), TransportError> {
        let Phase::Open { deflater, .. } = &mut self.core.phase else {
            return Err(match self.core.phase {
                Phase::Handshake { .. } => TransportError::NotReady,
                _ => TransportError::Closed,
            });
        };
        if app_out.is_empty() {
            return self.stream.take_pending(socket_out);
        }
        let compress = self.core.upgrade.as_ref().is_some_and(|u| u.compression)
            && app_out.len() >= self.core.config.limits.compress_min;
        let payload = if compress {
            deflater
                .get_or_insert_with(|| Box::new(Deflater::new()))
                .compress(app_out)?
        } else {
            app_out
        };
        let header = FrameHeader::new(opcode::BINARY, compress, payload.len());
        self.stream.send(&[header.as_bytes(), payload], socket_out)
    }

    pub(crate) fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.stream.take_pending(socket_out)
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.stream.has_pending()
    }

    pub(crate) fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        if matches!(self.core.phase, Phase::Open { .. }) {
            frame::push_close(&mut self.core.replies, code, reason);
            self.stream.queue(&self.core.replies)?;
            self.core.replies.clear();
        }
        self.core.phase = Phase::Closed;
        self.stream.close();
        Ok(())
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.core.phase, Phase::Open { .. }) && self.stream.is_ready()
    }
}

impl Core {
    /// Takes stream bytes: the upgrade request first, then frames. Returns how many it
    /// took; fewer than given only when `budget` ran out.
    fn take(
        &mut self,
        bytes: &[u8],
        app_in: &mut Vec<u8>,
        budget: usize,
    ) -> Result<usize, TransportError> {
        let mut used = 0;
        if let Phase::Handshake { request } = &mut self.phase {
            used = match Self::handshake(request, bytes, &self.config) {
                Ok(Some((used, accepted))) => {
                    handshake::write_accept(&mut self.replies, &accepted);
                    let compression = accepted.upgrade.compression;
                    self.upgrade = Some(accepted.upgrade);
                    self.upgraded_now = true;
                    self.phase = Phase::Open {
                        decoder: Box::new(Decoder::new(
                            self.config.limits.max_message,
                            compression,
                        )),
                        deflater: None,
                    };
                    used
                }
                Ok(None) => return Ok(bytes.len()),
                Err(e) => {
                    handshake::write_refusal(&mut self.replies, &e);
                    self.phase = Phase::Closed;
                    return Err(e.into());
                }
            };
        }
        match &mut self.phase {
            Phase::Handshake { .. } => Ok(used),
            Phase::Open { decoder, .. } => {
                match decoder.decode(&bytes[used..], app_in, &mut self.replies, budget) {
                    Ok(decoded) => {
                        if decoded.closed.is_some() {
                            self.peer_closed = decoded.closed;
                            self.phase = Phase::Closed;
                        }
                        Ok(used + decoded.consumed)
                    }
                    Err(e) => {
                        frame::push_close(&mut self.replies, e.close_code(), &e.to_string());
                        self.phase = Phase::Closed;
                        Err(e.into())
                    }
                }
            }
            // Whatever follows a close is ignored.
            Phase::Closed => Ok(bytes.len()),
        }
    }

    /// Adds `bytes` to the request buffer. `Ok(Some((used, accepted)))` once the request is
    /// whole and accepted, with how many of `bytes` it used (the rest are frames).
    fn handshake(
        request: &mut Vec<u8>,
        bytes: &[u8],
        config: &WsConfig,
    ) -> Result<Option<(usize, handshake::Accepted)>, crate::error::HandshakeError> {
        let max = config.limits.max_handshake;
        let taken = bytes.len().min(max - request.len());
        request.extend_from_slice(&bytes[..taken]);
        match handshake::read_request(request, config)? {
            // Earlier bytes never completed the request, so it ends inside these.
            Some((len, accepted)) => Ok(Some((taken - (request.len() - len), accepted))),
            None if request.len() >= max => Err(crate::error::HandshakeError::TooLarge { max }),
            None => Ok(None),
        }
    }
}
