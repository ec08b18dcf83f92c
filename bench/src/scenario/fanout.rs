//! `fanout`: one publisher to N subscribers of one subject.
//!
//! Owns: nothing but the shape; the engine is [`super::pubsub`]. The interesting figure is
//! the delivery rate: every publish becomes N deliveries of one shared payload.

use super::pubsub::{self, PubSubConfig, PubSubResult};
use super::Limit;
use crate::cpu::ServerCpu;
use crate::driver::{Driver, DriverError};

/// The fan-out run: 1 publisher, `subscribers` subscribers on `bench.fanout`.
pub fn config(subscribers: usize, size: usize, limit: Limit) -> PubSubConfig {
    PubSubConfig {
        subject: "bench.fanout".into(),
        ..PubSubConfig::new(1, subscribers, size, limit)
    }
}

/// Runs a fan-out, reading `server`'s CPU time over the measured window.
pub fn run(
    driver: &dyn Driver,
    config: &PubSubConfig,
    server: ServerCpu,
) -> Result<PubSubResult, DriverError> {
    pubsub::run(driver, config, server)
}
