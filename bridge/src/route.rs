//! Which local subscribers an imported copy is for.
//!
//! Upstream sends the bridge one copy of a message per matching subscription: one for the
//! plain subscribers it stands for, and one per queue group whose member upstream picked it
//! as (a local queue group joins the upstream group of the same name). Each copy goes into
//! the broker with a [`Route`] saying whom it is for: the plain subscribers, or one member
//! of one group, so no local subscriber gets a message twice and each queue group's
//! message is handled once in the whole cluster. The broker's shard honours it
//! (`Msg::bridge_route`).
//!
//! Owns: [`Route`].
//!
//! Never: travels on the wire: only the bridge's injected messages carry one.

use bytes::Bytes;

/// Whom a copy from upstream is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The plain (non-queue) subscribers.
    pub plain: bool,
    /// One member of each of these queue groups.
    pub groups: Vec<Bytes>,
}

impl Route {
    /// For the plain subscribers only.
    pub fn plain() -> Route {
        Route {
            plain: true,
            groups: Vec::new(),
        }
    }

    /// For one member of `group` only.
    pub fn group(group: Bytes) -> Route {
        Route {
            plain: false,
            groups: vec![group],
        }
    }
}
