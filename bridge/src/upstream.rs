//! The connection to the upstream NATS server: the handshake, and the shared writing end.
//!
//! Owns: connecting to one server of the list (`INFO` → `CONNECT` + `PING` → `PONG`, with
//! `headers`, `no_responders` and `echo` on), and [`Link`], the writing end every
//! bridge thread writes through: the socket of the current connection (none while
//! disconnected), its generation (one more per connection, so a thread holding work for
//! an older one knows to start over), and the `PING`s in flight in order, each with the
//! export position its `PONG` confirms.
//!
//! Never: blocks longer than the write timeout on a write (the socket has one; a write
//! that times out ends the connection), or reads (the reader thread owns the reading end).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_client::rustls::pki_types::ServerName;
use tern_client::rustls::{ClientConfig, ClientConnection};
use tern_client::NkeyCredentials;
use tern_protocol::binary::ResumeToken;
use tern_protocol::text::{
    encode_client_op, encode_pub_line, ClientOp, ConnectOptions, Limits, ServerDecoder, ServerInfo,
    ServerOp,
};

use crate::settings::{Settings, Upstream};

/// The connection's bytes: plain TCP, or TLS over it. Cloned for the reader: the two
/// halves share the TLS session (a lock held only to move bytes in or out of it, never
/// across a blocking socket read).
#[derive(Debug)]
pub(crate) struct Wire {
    tcp: TcpStream,
    tls: Option<Arc<Mutex<ClientConnection>>>,
}

impl Wire {
    pub(crate) fn try_clone(&self) -> std::io::Result<Wire> {
        Ok(Wire {
            tcp: self.tcp.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.tcp.set_read_timeout(t)
    }

    fn session(tls: &Mutex<ClientConnection>) -> MutexGuard<'_, ClientConnection> {
        tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let Some(tls) = &self.tls else {
            return self.tcp.write_all(data);
        };
        let mut session = Wire::session(tls);
        session.writer().write_all(data)?;
        while session.wants_write() {
            session.write_tls(&mut self.tcp)?;
        }
        Ok(())
    }

    /// Reads what there is (blocking up to the read timeout); 0 at the end.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.read(out);
        };
        loop {
            match Wire::session(tls).reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let mut raw = [0u8; 16 << 10];
            let n = self.tcp.read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut session = Wire::session(tls);
            let mut fed = &raw[..n];
            while !fed.is_empty() {
                session.read_tls(&mut fed)?;
                session
                    .process_new_packets()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            }
            while session.wants_write() {
                session.write_tls(&mut self.tcp)?;
            }
        }
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

/// How long connecting and the handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Upstream payloads up to this size are accepted (nats-server's largest `max_payload`).
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

pub(crate) fn limits() -> Limits {
    Limits {
        max_payload: MAX_PAYLOAD,
        max_control_line: 64 << 10,
        ..Limits::default()
    }
}

/// What a `PONG` confirms: export rule `export` has reached `token`, `count` messages
/// since the previous confirmation.
#[derive(Debug)]
pub(crate) struct Confirm {
    pub export: usize,
    pub token: ResumeToken,
    pub count: u64,
}

#[derive(Debug)]
pub(crate) struct LinkState {
    /// One more per connection made.
    pub generation: u64,
    stream: Option<Wire>,
    /// The server connected to.
    pub server: Option<String>,
    /// The `PING`s sent and not answered yet, oldest first.
    pings: VecDeque<Option<Confirm>>,
    /// When the server last answered a `PING`.
    pub last_pong: Instant,
    out: BytesMut,
}

/// The writing end of the upstream connection, shared by the bridge's threads.
#[derive(Debug)]
pub(crate) struct Link {
    state: Mutex<LinkState>,
    /// Notified on every connect and disconnect.
    pub changed: Condvar,
}

impl Link {
    pub(crate) fn new() -> Link {
        Link {
            state: Mutex::new(LinkState {
                generation: 0,
                stream: None,
                server: None,
                pings: VecDeque::new(),
                last_pong: Instant::now(),
                out: BytesMut::with_capacity(64 << 10),
            }),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for a connection; its generation, or `None`.
    pub(crate) fn wait_up(&self, timeout: Duration) -> Option<u64> {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.stream.is_none())
            .unwrap_or_else(|e| e.into_inner());
        state.stream.is_some().then_some(state.generation)
    }

    /// True while connection `generation` is up.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        let s = self.lock();
        s.generation == generation && s.stream.is_some()
    }

    /// Installs a new connection (after its handshake); its generation.
    pub(crate) fn up(&self, stream: Wire, server: String) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.stream = Some(stream);
        s.server = Some(server);
        s.pings.clear();
        s.last_pong = Instant::now();
        s.out.clear();
        let generation = s.generation;
        drop(s);
        self.changed.notify_all();
        generation
    }

    /// Ends connection `generation` (if it is still the current one); true if it was.
    pub(crate) fn down(&self, generation: u64) -> bool {
        let mut s = self.lock();
        if s.generation != generation || s.stream.is_none() {
            return false;
        }
        s.close();
        drop(s);
        self.changed.notify_all();
        true
    }
}

impl LinkState {
    pub(crate) fn is_up(&self) -> bool {
        self.stream.is_some()
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.shutdown();
        }
        self.server = None;
        self.pings.clear();
        self.out.clear();
    }

    /// Appends a publish.
    pub(crate) fn publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        encode_pub_line(
            &mut self.out,
            subject,
            reply,
            headers.map(<[u8]>::len),
            payload.len(),
        );
        if let Some(h) = headers {
            self.out.extend_from_slice(h);
        }
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends a publish whose header block is `block` with `fields` appended (written
    /// straight into the buffer); the size of its header block and payload.
    pub(crate) fn publish_with_fields(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        block: Option<&[u8]>,
        fields: &[(&str, &[u8])],
        payload: &[u8],
    ) -> usize {
        let headers_len = crate::headers::with_len(block, fields);
        encode_pub_line(
            &mut self.out,
            subject,
            reply,
            Some(headers_len),
            payload.len(),
        );
        crate::headers::write_with(&mut self.out, block, fields);
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        headers_len + payload.len()
    }

    /// Appends an operation.
    pub(crate) fn op(&mut self, op: &ClientOp) {
        encode_client_op(op, &mut self.out);
    }

    /// Appends a `PING` whose `PONG` confirms `confirm`.
    pub(crate) fn ping(&mut self, confirm: Option<Confirm>) {
        self.pings.push_back(confirm);
        encode_client_op(&ClientOp::Ping, &mut self.out);
    }

    /// The oldest `PING` in flight was answered: what it confirms.
    pub(crate) fn pong(&mut self) -> Option<Confirm> {
        self.last_pong = Instant::now();
        self.pings.pop_front().flatten()
    }

    /// `PING`s in flight.
    pub(crate) fn pings_in_flight(&self) -> usize {
        self.pings.len()
    }

    /// Writes what was appended. On failure the connection is closed (the reader then
    /// sees it end) and the error returned; the caller notifies [`Link::changed`].
    pub(crate) fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            self.out.clear();
            return Err("not connected".into());
        };
        let result = stream.write_all(&self.out);
        self.out.clear();
        result.map_err(|e| {
            self.close();
            format!("writing upstream: {e}")
        })
    }
}

/// What connecting needs besides the settings: the TLS configuration (when a server may
/// need it) and nkey credentials, loaded once when the bridge starts.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    pub tls: Option<Arc<ClientConfig>>,
    pub nkey: Option<NkeyCredentials>,
}

/// Connects to `server` and does the handshake (TLS when the server or the settings ask
/// for it, after the plain `INFO` as NATS servers do it); the connection, what the server
/// said in `INFO`, and any bytes read past the `PONG`.
pub(crate) fn connect(
    server: &Upstream,
    settings: &Settings,
    secrets: &Secrets,
) -> Result<(Wire, ServerInfo, BytesMut), String> {
    let addrs: Vec<_> = server
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("{server}: {e}"))?
        .collect();
    let mut last = format!("{server}: no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| format!("{server}: {e}");
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(settings.write_timeout))
        .map_err(io)?;
    let mut wire = Wire {
        tcp: stream,
        tls: None,
    };
    let mut decoder = ServerDecoder::new(limits());
    let mut buf = BytesMut::with_capacity(16 << 10);
    let info = match read_op(&mut wire, &mut decoder, &mut buf).map_err(io)? {
        ServerOp::Info(info) => *info,
        other => return Err(format!("{server}: expected INFO, got {other:?}")),
    };
    if info.tls_required || server.tls || settings.tls {
        let Some(config) = &secrets.tls else {
            return Err(format!(
                "{server} requires TLS: give the bridge a tls:// URL or tls = true (with \
                 tls_ca when its certificate is not signed by a public CA)"
            ));
        };
        let host = settings
            .tls_server_name
            .clone()
            .unwrap_or_else(|| server.host().to_string());
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{server}: {host:?} is not a valid TLS server name"))?;
        let mut session = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| format!("{server}: TLS: {e}"))?;
        while session.is_handshaking() {
            session
                .complete_io(&mut wire.tcp)
                .map_err(|e| format!("{server}: TLS handshake: {e}"))?;
        }
        wire.tls = Some(Arc::new(Mutex::new(session)));
    }
    let (user, pass) = match (&server.user, &settings.user) {
        (Some(u), _) => (Some(u.clone()), server.pass.clone()),
        (None, Some(u)) => (Some(u.clone()), settings.pass.clone()),
        (None, None) => (None, None),
    };
    let (nkey, sig, jwt) = match &secrets.nkey {
        Some(creds) => {
            let nonce = info.nonce.as_deref().unwrap_or_default();
            let sig = creds.sign(nonce.as_bytes()).map_err(|e| e.to_string())?;
            (
                Some(creds.public_key()),
                Some(sig),
                creds.jwt().map(str::to_string),
            )
        }
        None => (None, None, None),
    };
    let options = ConnectOptions {
        verbose: false,
        pedantic: false,
        tls_required: wire.tls.is_some(),
        // Its own exports come back only through its queue subscriptions (a local queue
        // group upstream picked); through plain ones they are dropped as echoes.
        echo: true,
        headers: true,
        no_responders: true,
        name: Some(format!("tern-bridge {}", settings.name)),
        lang: Some("rust".into()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        protocol: Some(1),
        user,
        pass,
        auth_token: settings.token.clone(),
        nkey,
        sig,
        jwt,
    };
    let mut out = BytesMut::new();
    encode_client_op(&ClientOp::Connect(Box::new(options)), &mut out);
    encode_client_op(&ClientOp::Ping, &mut out);
    wire.write_all(&out).map_err(io)?;
    loop {
        match read_op(&mut wire, &mut decoder, &mut buf).map_err(io)? {
            ServerOp::Pong => break,
            ServerOp::Err(e) => return Err(format!("{server} refused the bridge: {e}")),
            _ => {}
        }
    }
    Ok((wire, info, buf))
}

/// Reads until one whole operation is decoded.
fn read_op(
    wire: &mut Wire,
    decoder: &mut ServerDecoder,
    buf: &mut BytesMut,
) -> std::io::Result<ServerOp> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(op)) => return Ok(op),
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
        }
        let mut chunk = [0u8; 16 << 10];
        let n = wire.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
