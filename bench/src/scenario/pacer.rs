//! The paced publisher: one connection publishing at a fixed rate, on a schedule.
//!
//! Owns: the schedule and the send loop that `latency` and `stuck` share. Message `i` has
//! an *intended* send time `start + i / rate` (nanoseconds since the run's origin); the
//! caller's `stamp` writes it (and whatever else the scenario carries) into the payload.
//! When the publisher falls behind (the broker pushed back, or the machine is busy), the
//! late messages are sent at once in one batch but keep their intended times, so a stall
//! shows up as the latency every waiting message saw, not as one slow sample
//! (coordinated omission corrected). [`Paced::max_lag_ns`] says how far behind the
//! publisher itself fell.
//!
//! Never: reads a delivery, or ends without a final round trip — when [`publish_paced`]
//! returns `Ok`, the broker has processed every message it sent.

use std::thread;
use std::time::{Duration, Instant};

use super::{Limit, SYNC_TIMEOUT};
use crate::driver::{Connection, DriverError};

/// Below this much time to the next send, the publisher yields instead of sleeping
/// (a sleep can overshoot by ~50–100 µs).
const SPIN_BELOW: Duration = Duration::from_micros(200);

/// What one paced run did (also when it failed part way).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Paced {
    /// Messages sent.
    pub sent: u64,
    /// From the first intended send time to the answer of the final round trip.
    pub elapsed: Duration,
    /// How far behind its schedule the publisher fell, at worst, in nanoseconds.
    pub max_lag_ns: u64,
}

impl Paced {
    /// Messages per second over [`Paced::elapsed`] (0 when nothing was timed).
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }
}

/// Publishes `body` on `subject` through `conn`, `rate` messages per second, until
/// `limit`; before each send `stamp(body, i, intended_ns)` writes message `i`'s fields.
/// Times are nanoseconds since `origin`. Ends with a flush and a round trip. Returns what
/// it did, and the driver error that stopped it, if one did.
pub fn publish_paced(
    conn: &mut dyn Connection,
    subject: &str,
    rate: u64,
    limit: Limit,
    origin: Instant,
    body: &mut [u8],
    stamp: &mut dyn FnMut(&mut [u8], u64, u64),
) -> (Paced, Result<(), DriverError>) {
    let interval_ns = 1_000_000_000 / rate.max(1);
    let start_ns = origin.elapsed().as_nanos() as u64;
    let intended = |i: u64| start_ns + i * interval_ns;
    let mut sent = 0u64;
    let mut max_lag_ns = 0u64;
    let result = (|| -> Result<(), DriverError> {
        loop {
            let now = origin.elapsed().as_nanos() as u64;
            // Send everything that is due, in one batch.
            while intended(sent) <= now {
                if limit.reached(sent, Duration::from_nanos(intended(sent) - start_ns)) {
                    conn.flush()?;
                    return conn.sync(SYNC_TIMEOUT);
                }
                max_lag_ns = max_lag_ns.max(now - intended(sent));
                stamp(body, sent, intended(sent));
                conn.publish(subject, body)?;
                sent += 1;
            }
            conn.flush()?;
            let wait = Duration::from_nanos(
                intended(sent).saturating_sub(origin.elapsed().as_nanos() as u64),
            );
            if wait > SPIN_BELOW {
                thread::sleep(wait - SPIN_BELOW / 2);
            } else {
                thread::yield_now();
            }
        }
    })();
    let elapsed = Duration::from_nanos(origin.elapsed().as_nanos() as u64 - start_ns);
    (
        Paced {
            sent,
            elapsed,
            max_lag_ns,
        },
        result,
    )
}
