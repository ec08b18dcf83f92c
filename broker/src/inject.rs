//! The bridge's imports, published into the broker without a socket.
//!
//! Owns: [`MeshInject`], the broker's side of `tern_bridge::Inject`: each message the
//! bridge imports becomes a [`Msg`] published by no connection, sent in the bridge's batch
//! through the mesh to one worker's shard (its command lane: a busy broker holds the
//! bridge back), and routed there like any publish: stored, caught up, prioritised,
//! drop-noticed, with the copy's `bridge_route` honoured. An exporter's end of a Unix
//! socket pair goes to a worker as `Envelope::Attach`, to be served as a binary-port
//! connection.
//!
//! Never: runs on a worker's thread (the bridge's importer calls it), or publishes from a
//! real connection's identity (the origin is [`ConnId::import`], a slot no connection has:
//! acknowledgements and stalls addressed to it find nobody, and the bridge's own
//! connection is not sent what it imported).

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_bridge::{Inject, Injected};

use crate::mesh::{ConnId, Envelope, Mesh, Msg};

/// Where the bridge's imports go.
pub(crate) struct MeshInject {
    mesh: Mesh,
    worker: usize,
    origin: ConnId,
}

impl MeshInject {
    /// Imports go to `worker`'s shard (one worker: one upstream publisher's messages stay in
    /// order).
    pub(crate) fn new(mesh: Mesh, worker: usize) -> MeshInject {
        MeshInject {
            mesh,
            worker,
            origin: ConnId::import(worker as u16),
        }
    }
}

impl Inject for MeshInject {
    fn publish(&self, batch: Vec<Injected>, timeout: Duration) -> bool {
        let now = Instant::now();
        let batch = batch
            .into_iter()
            .map(|m| {
                Envelope::Publish(Arc::new(Msg {
                    reply: m.reply,
                    headers: Some(m.headers),
                    priority: m.priority,
                    bridge_route: m.route.map(Box::new),
                    ..Msg::new(m.subject, m.payload, self.origin, now)
                }))
            })
            .collect();
        self.mesh.send_commands_timeout(self.worker, batch, timeout)
    }

    fn has_room(&self) -> bool {
        self.mesh.has_room_for_commands(self.worker)
    }

    fn attach(&self, sock: UnixStream, hint: usize, timeout: Duration) -> bool {
        let to = hint % self.mesh.workers();
        self.mesh
            .send_timeout(to, vec![Envelope::Attach(Box::new(sock))], timeout)
    }
}
