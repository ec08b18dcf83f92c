//! A real `nats-server` cluster for the bridge tests: n nodes on free local ports, routed
//! to each other, started and stopped by the test (SIGTERM, SIGKILL, restart on the same
//! ports), and a TCP gate the test can open and close in front of one of them.
//!
//! `nats-server` is found through `$NATS_SERVER`, then `PATH`, then `/usr/sbin` (Debian's
//! package; `.ci/run` and `make test` install it). A missing one fails the test with that
//! advice: these tests never skip.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a node may take to accept connections, or the routes to form.
const START: Duration = Duration::from_secs(20);

pub fn nats_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    found.expect(
        "nats-server is not installed: `apt-get install nats-server` (make test and .ci/run do)",
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Node {
    port: u16,
    cluster_port: u16,
    http_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A cluster of `nats-server`s.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Removed when the cluster is dropped, after its nodes are stopped.
    dir: super::TempDir,
}

impl Cluster {
    /// Starts `n` routed nodes (one alone: no cluster) and waits until every node has a
    /// route to every other.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, "")
    }

    /// [`Cluster::start`] with `extra` appended to every node's configuration (TLS,
    /// authorization...). Free ports are found by binding and letting go, so a parallel
    /// test can take one before a node binds it: a cluster that does not form is started
    /// again on new ports (three attempts).
    pub fn start_with(n: usize, extra: &str) -> Cluster {
        Cluster::start_advertising(n, extra, true)
    }

    /// [`Cluster::start`] with nodes that do not tell clients about each other (INFO has
    /// no `connect_urls`): a client reaches only the servers it was given (a test's
    /// [`Gate`] stays the only way in).
    #[allow(dead_code)]
    pub fn start_unadvertised(n: usize) -> Cluster {
        Cluster::start_advertising(n, "", false)
    }

    fn start_advertising(n: usize, extra: &str, advertise: bool) -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = Cluster::configure(n, extra, advertise);
            for i in 0..n {
                cluster.spawn(i);
            }
            match cluster.ready() {
                Ok(()) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("the nats-server cluster did not form: {last}");
    }

    fn configure(n: usize, extra: &str, advertise: bool) -> Cluster {
        let dir = super::temp_dir("nats-cluster");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, cluster_port, http_port)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", p.1))
                .collect();
            let config = dir.join(format!("node{i}.conf"));
            // One node stands alone (JetStream refuses a cluster of one).
            let cluster = if n == 1 {
                String::new()
            } else {
                format!(
                    "cluster {{\n  name: tern-test\n  listen: 127.0.0.1:{cluster_port}\n  \
                     no_advertise: {}\n  routes: [{}]\n}}\n",
                    !advertise,
                    routes.join(", ")
                )
            };
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http_port}\n\
                     {cluster}{extra}\n"
                ),
            )
            .expect("write a nats-server config");
            nodes.push(Node {
                port,
                cluster_port,
                http_port,
                config,
                child: None,
            });
        }
        Cluster { nodes, dir }
    }

    /// Every node listening and routed to every other, within [`START`]; or what is not.
    fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START;
        for i in 0..self.nodes.len() {
            let addr: SocketAddr = ([127, 0, 0, 1], self.nodes[i].port).into();
            while TcpStream::connect(addr).is_err() {
                let exited = self.nodes[i]
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited || Instant::now() >= deadline {
                    return Err(format!("nats-server {i} did not start"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.routed(deadline)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(nats_server_path())
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        node.child = Some(child);
    }

    fn wait_listening(&self, i: usize) {
        let deadline = Instant::now() + START;
        let addr: SocketAddr = ([127, 0, 0, 1], self.nodes[i].port).into();
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server {i} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node has a route to every other running node.
    pub fn wait_routes(&self) {
        if let Err(e) = self.routed(Instant::now() + START) {
            panic!("{e}");
        }
    }

    fn routed(&self, deadline: Instant) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        for &i in &running {
            loop {
                let routes = self.routes(i);
                if routes >= running.len() - 1 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "node {i} has {routes} routes, wants {}",
                        running.len() - 1
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The routes node `i` has (its `/routez`).
    fn routes(&self, i: usize) -> usize {
        use std::io::{Read, Write};
        let addr: SocketAddr = ([127, 0, 0, 1], self.nodes[i].http_port).into();
        let Ok(mut s) = TcpStream::connect(addr) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET /routez HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["num_routes"].as_u64())
            .unwrap_or(0) as usize
    }

    /// `nats://127.0.0.1:<port>` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        ([127, 0, 0, 1], self.nodes[i].port).into()
    }

    /// Stops node `i` with `signal` and reaps it.
    pub fn stop(&mut self, i: usize, signal: libc::c_int) {
        if let Some(mut child) = self.nodes[i].child.take() {
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts node `i` again on the same ports.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_listening(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A TCP gate in front of an address: while closed, connections are accepted and closed
/// at once (and open ones are cut); while open, they are relayed.
pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Gate {
    pub fn new(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (open, stop, conns) = (open.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((down, _)) => {
                            if !open.load(Ordering::Relaxed) {
                                continue;
                            }
                            let Ok(up) = TcpStream::connect(target) else {
                                continue;
                            };
                            down.set_nonblocking(false).unwrap();
                            for (from, to) in [(&down, &up), (&up, &down)] {
                                let (mut from, mut to) =
                                    (from.try_clone().unwrap(), to.try_clone().unwrap());
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut from, &mut to);
                                    let _ = from.shutdown(Shutdown::Both);
                                    let _ = to.shutdown(Shutdown::Both);
                                });
                            }
                            conns.lock().unwrap().extend([down, up]);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Gate {
            addr,
            open,
            stop,
            conns,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes the gate: cuts what is open, refuses what comes.
    pub fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}
