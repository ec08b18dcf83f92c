//! A subscriber that has stopped reading: the stuck consumer of the `stuck` scenario.
//!
//! Owns: the socket of a connection that did its handshake and subscribed through its
//! protocol's driver ([`super::Driver::connect_stalled`], with a small receive buffer) and
//! from then on is never read; and telling, without reading it, whether the broker has
//! closed it.
//!
//! Why not read to find out: the broker's orderly close (its error text, then a `FIN`)
//! queues behind the deliveries this socket never took, so it cannot arrive while the
//! receive window is shut. A reset can: the broker's kernel answers data sent to a socket
//! the broker has closed with `RST`. So [`Stalled::probe`] writes one `PING` — the only
//! byte ever written after the subscription — and then looks at the socket's state, and
//! [`Stalled::wait_closed`] waits (with `poll(2)`, asking for no read readiness) for the
//! socket to report an error or a hang-up, which a broker that resets the connection
//! causes on its own.
//!
//! Never: reads the socket, not even a peek — what the broker managed to send stays in the
//! receive buffer, and the window stays shut; never blocks on a write.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::SockRef;

/// An open connection, subscribed, that nothing reads.
#[derive(Debug)]
pub struct Stalled {
    stream: TcpStream,
    /// The protocol's `PING`, written by [`Stalled::probe`].
    ping: Vec<u8>,
}

impl Stalled {
    /// Takes over `stream` (after its handshake and subscription); `ping` is the
    /// protocol's encoded `PING`.
    pub(crate) fn new(stream: TcpStream, ping: Vec<u8>) -> Self {
        Stalled { stream, ping }
    }

    /// The socket's receive buffer as the kernel sized it (`SO_RCVBUF`: twice what was
    /// asked, at least the kernel's minimum).
    pub fn recv_buffer(&self) -> Option<usize> {
        SockRef::from(&self.stream).recv_buffer_size().ok()
    }

    /// Waits at most `wait` for the socket to report that the broker closed it (an error
    /// such as a reset, or a hang-up); returns how, or `None` if it did not. Never reads.
    pub fn wait_closed(&self, wait: Duration) -> Option<String> {
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            // Only the end of the stream is asked for; errors and hang-ups are always
            // reported. Not POLLIN: buffered deliveries are not news.
            events: libc::POLLRDHUP,
            revents: 0,
        };
        let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is one valid pollfd that outlives the call, and the count is 1.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        if ready <= 0 {
            // Nothing happened, or an interrupted wait: no news either way.
            return None;
        }
        if let Some(error) = self.pending_error() {
            return Some(error);
        }
        if fd.revents & libc::POLLRDHUP != 0 {
            Some("closed by the broker (end of stream)".into())
        } else if fd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            Some("hung up".into())
        } else {
            // Only POLLNVAL is left, which an open socket never reports: say so rather
            // than let a watcher spin on it.
            Some(format!("poll reported {:#x}", fd.revents))
        }
    }

    /// Whether the broker has closed the connection: looks at the socket, then writes one
    /// `PING` without blocking (a closed peer answers it with a reset) and waits at most
    /// `wait` for the answer. `Some(how)` when closed, `None` when it is still open.
    pub fn probe(&self, wait: Duration) -> Option<String> {
        if let Some(closed) = self.wait_closed(Duration::ZERO) {
            return Some(closed);
        }
        let sent = SockRef::from(&self.stream)
            .send_with_flags(&self.ping, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        match sent {
            Ok(_) => self.wait_closed(wait),
            // Our own send buffer is full: this side cannot tell, but nothing says closed.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_closed(wait),
            Err(e) => Some(format!("a write failed: {e}")),
        }
    }

    /// The socket's pending error (`SO_ERROR`, e.g. a reset), if any.
    fn pending_error(&self) -> Option<String> {
        match self.stream.take_error() {
            Ok(Some(e)) => Some(format!("reset: {e}")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot read its state: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    use super::*;

    fn pair() -> (Stalled, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Stalled::new(client, b"PING\r\n".to_vec()), server)
    }

    #[test]
    fn an_open_connection_is_open_even_with_unread_data() {
        let (stalled, mut server) = pair();
        server.write_all(&[b'x'; 1000]).unwrap();
        assert_eq!(stalled.wait_closed(Duration::from_millis(20)), None);
        assert_eq!(stalled.probe(Duration::from_millis(50)), None);
        assert!(stalled.recv_buffer().unwrap() > 0);
    }

    #[test]
    fn a_closed_peer_with_data_still_queued_is_found_by_the_probe() {
        let (stalled, mut server) = pair();
        // The broker sent more than it could deliver, then closed: its FIN stays queued
        // behind the data, but the probe's PING is answered with a reset.
        server.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.write(&chunk).is_ok() {
            assert!(Instant::now() < deadline, "the buffers never filled");
        }
        drop(server);
        let closed = stalled.probe(Duration::from_secs(2));
        assert!(closed.is_some(), "the probe did not notice the close");
    }
}
