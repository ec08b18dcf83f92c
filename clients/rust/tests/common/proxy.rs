//! A TCP proxy in front of a broker for the tests that cut connections: whatever goes
//! through it can be cut (both ways), and what the broker sends can be held back first.
//!
//! Owns: [`Proxy`], one acceptor thread and two relay threads per connection.
//!
//! Never: outlives the test (dropping it stops the acceptor and cuts everything).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP proxy in front of the broker whose server-to-client direction can be held
/// (nothing the broker sends is passed on) and whose connections can be cut.
pub struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    hold: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (open, hold, stop) = (Arc::clone(&open), Arc::clone(&hold), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((down, _)) => {
                            down.set_nonblocking(false).unwrap();
                            let up = TcpStream::connect(upstream).unwrap();
                            let mut open = open.lock().unwrap();
                            for (from, to, held) in [(&down, &up, None), (&up, &down, Some(&hold))]
                            {
                                let (from, to) =
                                    (from.try_clone().unwrap(), to.try_clone().unwrap());
                                let held = held.map(Arc::clone);
                                std::thread::spawn(move || relay(from, to, held));
                            }
                            open.extend([down, up]);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("proxy accept: {e}"),
                    }
                }
            })
        };
        Proxy {
            addr,
            open,
            hold,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("tern://{}", self.addr)
    }

    /// Stops (or resumes) passing on what the broker sends.
    pub fn hold_replies(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Cuts every connection through the proxy, both ways; what was held is lost.
    pub fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either ends; while `held` is set, what was read waits
/// (a read already under way when the hold starts is held too).
fn relay(mut from: TcpStream, mut to: TcpStream, held: Option<Arc<AtomicBool>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while held.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(2));
        }
        // After a cut this fails: what was held is lost with the connection.
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.hold_replies(false);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
