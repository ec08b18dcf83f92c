//! `catchup`: replay speed from the broker's ring log.
//!
//! Owns: filling the log (one publisher, `count` messages of `size` bytes on one subject,
//! then a round trip so all are stored), then timing a new subscriber that asks for
//! everything the log holds (binary protocol: a resume from an empty token) until it has
//! received them all. The figure is records replayed per second, end to end: the broker
//! reading its log, encoding `MESSAGE` frames and the harness parsing them. The replay is
//! the measured window: one [`Delivery`], replayed of stored, with the server's CPU time
//! over it (the filling is not measured).
//!
//! Never: runs against a broker without catch-up (the text protocol); that is reported as
//! the run's problem, and the suite does not schedule it there.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::delivery::Delivery;
use super::{payload, DEFAULT_DRAIN};
use crate::cpu::{CpuReading, ServerCpu};
use crate::driver::{Driver, DriverError};
use crate::report::{Better, Figure};

/// A catch-up run.
#[derive(Debug, Clone, Serialize)]
pub struct CatchupConfig {
    /// Messages stored before the catch-up.
    pub count: u64,
    /// Payload bytes per message.
    pub size: usize,
}

/// What a catch-up run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CatchupResult {
    /// The run.
    pub config: CatchupConfig,
    /// Messages published (and stored) before the catch-up.
    pub stored: u64,
    /// Messages the catch-up delivered.
    pub replayed: u64,
    /// From the subscribe to the last message, in seconds.
    pub seconds: f64,
    /// The server's CPU time over the replay.
    pub server_cpu: CpuReading,
    /// Everything that went wrong; the counts are judged by [`CatchupResult::delivery`].
    pub problems: Vec<String>,
}

impl CatchupResult {
    /// The figures for the tables.
    pub fn figures(&self) -> Vec<Figure> {
        let rate = if self.seconds > 0.0 {
            self.replayed as f64 / self.seconds
        } else {
            0.0
        };
        vec![
            Figure::new("replay rate", rate, "msg/s", Better::Higher),
            Figure::new(
                "replay throughput",
                rate * self.config.size as f64 / 1e6,
                "MB/s",
                Better::Higher,
            ),
        ]
    }

    /// The replay: messages replayed of those stored, and the server's CPU over it.
    pub fn delivery(&self) -> Delivery {
        Delivery::new(self.replayed, self.stored, self.server_cpu.clone())
    }
}

/// The subject a catch-up run uses.
const SUBJECT: &str = "bench.catchup";

/// Fills the log, then times a catch-up of all of it, reading `server`'s CPU time over
/// the catch-up.
pub fn run(
    driver: &dyn Driver,
    config: &CatchupConfig,
    server: ServerCpu,
) -> Result<CatchupResult, DriverError> {
    let mut publisher = driver.connect()?;
    let body = payload::build(config.size, 0);
    for _ in 0..config.count {
        publisher.publish(SUBJECT, &body)?;
    }
    publisher.sync(super::SYNC_TIMEOUT)?;

    let mut subscriber = driver.connect()?;
    let window = server.start();
    let started = Instant::now();
    subscriber.subscribe_from_start(SUBJECT)?;
    subscriber.flush()?;
    let mut replayed = 0u64;
    let mut last = started;
    let mut problems = Vec::new();
    while replayed < config.count {
        let got = subscriber.receive(Duration::from_millis(100), &mut |_| {})?;
        if got > 0 {
            replayed += got as u64;
            last = Instant::now();
        } else if last.elapsed() > DEFAULT_DRAIN {
            problems.push(format!("the replay stopped: nothing for {DEFAULT_DRAIN:?}"));
            break;
        }
    }
    let server_cpu = window.finish();
    Ok(CatchupResult {
        config: config.clone(),
        stored: config.count,
        replayed,
        seconds: last.duration_since(started).as_secs_f64(),
        server_cpu,
        problems,
    })
}
