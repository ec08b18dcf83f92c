//! Authentication for the whole broker: the rules every worker checks credentials against
//! (swapped whole on SIGHUP), and the checker thread that verifies the costly ones (bcrypt
//! passwords) off the workers' loops.
//!
//! Owns: [`AuthHandle`] (the current [`Authenticator`] and its generation, which a worker
//! compares with its connections' to re-check their permissions after a reload), the
//! [`Checker`] thread with its bounded queue of [`Job`]s, and each worker's [`Verdicts`]
//! (what the checker decided, with the worker's waker).
//!
//! Never: runs bcrypt on a worker, or makes a worker wait: a worker loads the current
//! authenticator lock-free, hands a costly check over with a `try_send` (a full queue is a
//! refusal the client can retry, not a wait), and looks at its verdicts with one atomic
//! load per loop turn, taking a short uncontended lock only when there are some. The
//! checker's own wait for work has a timeout, so it notices when the broker stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use mio::Waker;
use tern_auth::{AuthFailure, Authenticator, Credentials, Identity};

use crate::mesh::ConnId;

/// Costly checks waiting for the checker thread, at most. A connection that finds the
/// queue full is refused (`checker_busy`) and may retry: at some 50-200 ms per bcrypt
/// check, a queue this long is already seconds of work.
pub(crate) const CHECKS_QUEUED: usize = 64;

/// How long the checker waits for work before it looks whether the broker is stopping.
const CHECKER_IDLE: Duration = Duration::from_millis(500);

/// The authenticator every worker reads. Replaced whole on SIGHUP; connections already
/// open keep their identity, and the worker re-checks their permissions against the new
/// rules when it sees the generation change.
pub(crate) struct AuthHandle {
    current: ArcSwap<Authenticator>,
    generation: AtomicU64,
}

impl AuthHandle {
    pub fn new(auth: Authenticator) -> AuthHandle {
        AuthHandle {
            current: ArcSwap::from_pointee(auth),
            generation: AtomicU64::new(0),
        }
    }

    /// The rules as they are now (a lock-free load).
    pub fn load(&self) -> Arc<Authenticator> {
        self.current.load_full()
    }

    /// How many times the rules were replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts new rules in place (SIGHUP).
    pub fn replace(&self, auth: Authenticator) {
        self.current.store(Arc::new(auth));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Credentials a client presented, owned: what a [`Job`] carries to the checker thread.
/// Its `Debug` shows which were given, never their values.
#[derive(Default, Clone)]
pub(crate) struct OwnedCredentials {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    pub nkey: Option<String>,
    pub sig: Option<String>,
}

impl OwnedCredentials {
    pub fn borrow(&self) -> Credentials<'_> {
        Credentials {
            user: self.user.as_deref(),
            pass: self.pass.as_deref(),
            token: self.token.as_deref(),
            nkey: self.nkey.as_deref(),
            sig: self.sig.as_deref(),
        }
    }
}

impl std::fmt::Debug for OwnedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedCredentials")
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| ".."))
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("nkey", &self.nkey)
            .field("sig", &self.sig.as_ref().map(|_| ".."))
            .finish()
    }
}

/// A costly check handed to the checker thread.
pub(crate) struct Job {
    pub conn: ConnId,
    pub auth: Arc<Authenticator>,
    pub creds: OwnedCredentials,
    pub nonce: Option<String>,
}

/// What the checker decided about one connection's credentials.
pub(crate) struct Verdict {
    pub conn: ConnId,
    pub outcome: Result<Identity, AuthFailure>,
}

/// One worker's verdicts, filled by the checker thread.
pub(crate) struct Verdicts {
    queue: Mutex<Vec<Verdict>>,
    pending: AtomicBool,
    waker: Arc<Waker>,
}

impl Verdicts {
    pub fn new(waker: Arc<Waker>) -> Verdicts {
        Verdicts {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            waker,
        }
    }

    /// The verdicts that arrived since the last call (one atomic load when none did).
    pub fn take(&self) -> Vec<Verdict> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn put(&self, verdict: Verdict) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(verdict);
        self.pending.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// The checker thread's door: where workers hand costly checks.
#[derive(Clone)]
pub(crate) struct Checker {
    jobs: Sender<Job>,
}

impl Checker {
    /// Starts the checker thread; `verdicts` is every worker's, by worker index. The
    /// thread ends once every `Checker` clone is dropped.
    pub fn start(verdicts: Vec<Arc<Verdicts>>) -> std::io::Result<(Checker, JoinHandle<()>)> {
        let (jobs, rx) = crossbeam_channel::bounded(CHECKS_QUEUED);
        let thread = std::thread::Builder::new()
            .name("tern-auth-check".into())
            .spawn(move || run(rx, verdicts))?;
        Ok((Checker { jobs }, thread))
    }

    /// Hands a check over; false when the queue is full (the caller refuses the client).
    pub fn submit(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(jobs: Receiver<Job>, verdicts: Vec<Arc<Verdicts>>) {
    loop {
        let job = match jobs.recv_timeout(CHECKER_IDLE) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let outcome =
            job.auth
                .authenticate(&job.creds.borrow(), job.nonce.as_deref(), SystemTime::now());
        if let Some(v) = verdicts.get(usize::from(job.conn.worker)) {
            v.put(Verdict {
                conn: job.conn,
                outcome,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_never_shows_a_secret() {
        let creds = OwnedCredentials {
            user: Some("alice".into()),
            pass: Some("hunter2".into()),
            token: Some("t0ken".into()),
            nkey: None,
            sig: Some("c2ln".into()),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "t0ken", "c2ln"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn the_generation_moves_with_each_replacement() {
        let handle = AuthHandle::new(Authenticator::none());
        assert_eq!(handle.generation(), 0);
        assert!(!handle.load().is_required());
        handle.replace(Authenticator::none());
        assert_eq!(handle.generation(), 1);
    }
}
