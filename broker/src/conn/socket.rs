//! The byte pipe under a connection: a TCP socket, one end of a Unix socket pair (an
//! in-process peer's: a bridge's export, `Envelope::Attach`), or (in unit tests) memory.
//!
//! Owns: the calls a connection makes on its pipe, a read into spare buffer room
//! ([`Socket::read_spare`]), a (vectored) write ([`std::io::Write`]) and how much of what
//! it wrote the peer has not taken yet ([`Socket::unread`], `SIOCOUTQ`), with the socket's
//! own semantics: `WouldBlock` when nothing waits or nothing more fits, `Ok(0)` from a read
//! once the peer closed. The connection's I/O layer (`io.rs`) is its only user. The
//! in-memory pipe ([`Memory`], tests only) has the same, so that tests drive real
//! connections through a real worker and its I/O layer without a socket
//! (`worker/session_tests.rs`): bytes in, bytes out, a bounded "send buffer" to make the
//! server wait.
//!
//! Never: buffers, parses or blocks. A socket read is one `read(2)` into the caller's spare
//! room, as it was before this type existed (no copy, no zeroing).

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};

pub(crate) enum Socket {
    Tcp(TcpStream),
    /// A socket pair's end, whose other end is in this process (no network, no TLS).
    Unix(UnixStream),
    #[cfg(test)]
    Memory(Memory),
}

impl Socket {
    /// One read into `spare`; returns the bytes now initialised at its start.
    pub fn read_spare(&mut self, spare: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let fd = match self {
            Socket::Tcp(sock) => sock.as_raw_fd(),
            Socket::Unix(sock) => sock.as_raw_fd(),
            #[cfg(test)]
            Socket::Memory(m) => return m.read_spare(spare),
        };
        // SAFETY: `read(2)` writes at most `spare.len()` bytes into `spare`, which is valid
        // for writes of that length, and never reads it; the bytes it reports written are
        // initialised.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast::<libc::c_void>(), spare.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Bytes written to the socket and not yet taken by the peer: the kernel's send queue
    /// (`SIOCOUTQ`, for a Unix socket too). 0 where it cannot be told, and for memory.
    pub fn unread(&self) -> usize {
        let fd = match self {
            Socket::Tcp(sock) => sock.as_raw_fd(),
            Socket::Unix(sock) => sock.as_raw_fd(),
            #[cfg(test)]
            Socket::Memory(_) => return 0,
        };
        outq(fd)
    }

    /// Ends what this side sends (a FIN behind what was written), keeping it open for reading.
    pub fn shutdown_write(&mut self) {
        let _ = match self {
            Socket::Tcp(sock) => sock.shutdown(std::net::Shutdown::Write),
            Socket::Unix(sock) => sock.shutdown(std::net::Shutdown::Write),
            #[cfg(test)]
            Socket::Memory(_) => Ok(()),
        };
    }

    /// The socket, to (de)register it with the poll; `None` for memory.
    pub fn source(&mut self) -> Option<&mut dyn Source> {
        match self {
            Socket::Tcp(sock) => Some(sock),
            Socket::Unix(sock) => Some(sock),
            #[cfg(test)]
            Socket::Memory(_) => None,
        }
    }
}

/// The bytes a socket's send queue holds (`SIOCOUTQ`); 0 where it cannot be told.
#[cfg(target_os = "linux")]
fn outq(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: `TIOCOUTQ` (`SIOCOUTQ` on a socket) writes one `c_int` through the pointer,
    // which points at one.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

#[cfg(not(target_os = "linux"))]
fn outq(_: std::os::fd::RawFd) -> usize {
    0
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Socket::Tcp(_) => "Socket::Tcp",
            Socket::Unix(_) => "Socket::Unix",
            #[cfg(test)]
            Socket::Memory(_) => "Socket::Memory",
        })
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(sock) => sock.write(buf),
            Socket::Unix(sock) => sock.write(buf),
            #[cfg(test)]
            Socket::Memory(m) => m.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(sock) => sock.write_vectored(bufs),
            Socket::Unix(sock) => sock.write_vectored(bufs),
            #[cfg(test)]
            Socket::Memory(m) => m.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) use memory::Memory;

#[cfg(test)]
mod memory {
    use std::collections::VecDeque;
    use std::io::{self, IoSlice};
    use std::mem::MaybeUninit;
    use std::sync::{Arc, Mutex};

    /// Both ends of an in-memory pipe: the connection's (`Socket::Memory`) and the test's,
    /// sharing one state.
    #[derive(Clone, Default)]
    pub(crate) struct Memory {
        state: Arc<Mutex<State>>,
    }

    #[derive(Default)]
    struct State {
        /// What the client sent, not yet read by the server.
        input: VecDeque<u8>,
        /// The client closed its side: reads return 0 once `input` is empty.
        eof: bool,
        /// What the server wrote, not yet taken by the test.
        output: Vec<u8>,
        /// How many more bytes the server may write before `WouldBlock` (`None`: any).
        room: Option<usize>,
    }

    impl Memory {
        /// The client sends `bytes`.
        pub fn send(&self, bytes: &[u8]) {
            self.state.lock().unwrap().input.extend(bytes);
        }

        /// The client closes its side: reads return 0 once what it sent is read.
        pub fn close(&self) {
            self.state.lock().unwrap().eof = true;
        }

        /// Takes what the server wrote so far.
        pub fn take(&self) -> Vec<u8> {
            std::mem::take(&mut self.state.lock().unwrap().output)
        }

        /// Bounds what the server may write from now on (`None`: unbounded), as a full
        /// send buffer does; taking output does not make room, only this does.
        pub fn set_room(&self, room: Option<usize>) {
            self.state.lock().unwrap().room = room;
        }

        pub(super) fn read_spare(&mut self, spare: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
            let mut s = self.state.lock().unwrap();
            if s.input.is_empty() {
                return if s.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = spare.len().min(s.input.len());
            for (slot, byte) in spare.iter_mut().zip(s.input.drain(..n)) {
                slot.write(byte);
            }
            Ok(n)
        }

        pub(super) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut s = self.state.lock().unwrap();
            let mut written = 0;
            for b in bufs {
                let take = match s.room {
                    Some(room) => b.len().min(room),
                    None => b.len(),
                };
                s.output.extend_from_slice(&b[..take]);
                written += take;
                if let Some(room) = &mut s.room {
                    *room -= take;
                }
                if take < b.len() {
                    break;
                }
            }
            if written == 0 && bufs.iter().any(|b| !b.is_empty()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(written)
        }
    }
}
