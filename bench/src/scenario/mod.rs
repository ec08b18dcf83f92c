//! Scenarios: what load to put on a broker, and what to measure.
//!
//! Owns: one module per scenario (`pubsub`, `fanout`, `queue`, `latency`, `stuck`,
//! `conns`, `audience`, `catchup`, and `soak`, which runs on its own against a `ternd` it
//! starts), the subscriber threads they share ([`subscribers`]),
//! the paced publisher ([`pacer`]), the payload layout ([`payload`]), how long a run
//! lasts ([`Limit`]) and the measured window every counted scenario returns
//! ([`delivery`]: delivered of expected, the server's CPU time over it).
//!
//! Every scenario is written against [`crate::driver::Driver`], never a socket, so it runs
//! unchanged against any broker a driver can reach. Counts are exact: a scenario reports
//! what was published, what was delivered and what was expected, and lists every problem
//! (a disconnect, a timeout) instead of hiding it in a rate; [`Scenario::run`] hands its
//! windows to the report, where a count short of or over the expected one is a problem.
//!
//! Never: prints. Scenarios return plain results; [`crate::report`] renders them.

pub mod audience;
pub mod catchup;
pub mod conns;
pub mod delivery;
pub mod fanout;
pub mod latency;
pub mod pacer;
pub mod payload;
pub mod pubsub;
pub mod queue;
pub mod soak;
pub mod stuck;
pub mod subscribers;

use std::time::Duration;

use serde::Serialize;

/// How long publishing lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// This many messages per publisher.
    Count(u64),
    /// Publish for this long.
    Duration(#[serde(with = "duration_ms")] Duration),
}

impl Limit {
    /// True when a publisher that has sent `sent` messages for `elapsed` must stop.
    pub fn reached(&self, sent: u64, elapsed: Duration) -> bool {
        match *self {
            Limit::Count(n) => sent >= n,
            Limit::Duration(d) => elapsed >= d,
        }
    }
}

/// How long to wait for a subscriber to show it is ready, and, once publishing is over,
/// how long without any delivery before a run stops waiting for the rest.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// How long a publisher's final round trip may take (the broker may hold a backlog).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes per megabyte in reported MB/s (decimal, as network rates are).
pub const MB: f64 = 1_000_000.0;

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 2s, 1m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "`{text}` is not a duration (examples: 500ms, 2s, 1m)"
        ));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn limits() {
        assert!(!Limit::Count(3).reached(2, Duration::from_secs(100)));
        assert!(Limit::Count(3).reached(3, Duration::ZERO));
        assert!(!Limit::Duration(Duration::from_secs(1)).reached(1 << 40, Duration::ZERO));
        assert!(Limit::Duration(Duration::from_secs(1)).reached(0, Duration::from_secs(1)));
    }
}

/// One scenario, configured: what the CLI and the suite run.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// P publishers, S subscribers.
    PubSub(pubsub::PubSubConfig),
    /// 1 publisher, N subscribers.
    Fanout(pubsub::PubSubConfig),
    /// A queue group of N members.
    Queue(pubsub::PubSubConfig),
    /// Paced publishing, latency percentiles.
    Latency(latency::LatencyConfig),
    /// Paced publishing to fast subscribers, without and then with one that never reads.
    Stuck(stuck::StuckConfig),
    /// N idle connections.
    Conns(conns::ConnsConfig),
    /// Many users in rooms, churn and a reconnect storm.
    Audience(audience::AudienceConfig),
    /// Replay speed from the ring log (binary protocol only).
    Catchup(catchup::CatchupConfig),
}

impl Scenario {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::PubSub(_) => "pubsub",
            Scenario::Fanout(_) => "fanout",
            Scenario::Queue(_) => "queue",
            Scenario::Latency(_) => "latency",
            Scenario::Stuck(_) => "stuck",
            Scenario::Conns(_) => "conns",
            Scenario::Audience(_) => "audience",
            Scenario::Catchup(_) => "catchup",
        }
    }

    /// True when the scenario can run over `protocol` (catch-up needs the binary one).
    pub fn supports(&self, protocol: crate::driver::Protocol) -> bool {
        match self {
            Scenario::Catchup(_) => protocol == crate::driver::Protocol::Binary,
            _ => true,
        }
    }

    /// What exactly runs, e.g. `pubsub 1x1 128B`: the key that matches runs across targets.
    pub fn label(&self) -> String {
        match self {
            Scenario::PubSub(c) | Scenario::Fanout(c) | Scenario::Queue(c) => format!(
                "{} {}x{} {}B",
                self.name(),
                c.publishers,
                c.subscribers,
                c.size
            ),
            Scenario::Latency(c) => format!("latency {}/s {}B", c.rate, c.size),
            Scenario::Stuck(c) => c.label(),
            Scenario::Conns(c) => format!("conns {}", c.count),
            Scenario::Audience(c) => c.label(),
            Scenario::Catchup(c) => format!("catchup {} {}B", c.count, c.size),
        }
    }

    /// Runs the scenario; a failure becomes a report with the error as its problem.
    /// `server_pid`, when given, is the broker's process: its CPU time is read over each
    /// measured window, and it replaces the `conns` scenario's own `broker_pid`.
    pub fn run(
        &self,
        driver: &dyn crate::driver::Driver,
        server_pid: Option<u32>,
    ) -> crate::report::ScenarioReport {
        fn detail<T: Serialize>(t: &T) -> serde_json::Value {
            serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
        }
        /// A finished scenario's figures, windows and problems, with its whole report as
        /// the detail.
        fn outcome<T: Serialize>(
            r: &T,
            figures: Vec<crate::report::Figure>,
            deliveries: Vec<delivery::Delivery>,
            problems: &[String],
        ) -> Outcome {
            (figures, deliveries, problems.to_vec(), detail(r))
        }
        fn error(e: crate::driver::DriverError) -> Outcome {
            (vec![], vec![], vec![e.to_string()], serde_json::Value::Null)
        }
        /// Figures, measured windows, problems, detail.
        type Outcome = (
            Vec<crate::report::Figure>,
            Vec<delivery::Delivery>,
            Vec<String>,
            serde_json::Value,
        );
        let server = crate::cpu::ServerCpu::of(server_pid);
        let (figures, deliveries, problems, detail): Outcome = match self {
            Scenario::PubSub(c) | Scenario::Fanout(c) => match pubsub::run(driver, c, server) {
                Ok(r) => outcome(&r, r.figures(), vec![r.delivery()], &r.problems),
                Err(e) => error(e),
            },
            Scenario::Queue(c) => match queue::run(driver, c, server) {
                Ok(r) => outcome(&r, r.figures(), vec![r.run.delivery()], &r.run.problems),
                Err(e) => error(e),
            },
            Scenario::Latency(c) => match latency::run(driver, c, server) {
                Ok(r) => outcome(&r, r.figures(), vec![r.delivery()], &r.problems),
                Err(e) => error(e),
            },
            Scenario::Stuck(c) => match stuck::run(driver, c, server) {
                Ok(r) => outcome(&r, r.figures(), r.deliveries(), &r.problems),
                Err(e) => error(e),
            },
            Scenario::Conns(c) => {
                let mut c = c.clone();
                if server_pid.is_some() {
                    c.broker_pid = server_pid;
                }
                let r = conns::run(driver, &c);
                outcome(&r, r.figures(), vec![], &r.problems)
            }
            Scenario::Audience(c) => {
                let r = audience::run(driver, c);
                outcome(&r, r.figures(), vec![], &r.problems)
            }
            Scenario::Catchup(c) => match catchup::run(driver, c, server) {
                Ok(r) => outcome(&r, r.figures(), vec![r.delivery()], &r.problems),
                Err(e) => error(e),
            },
        };
        crate::report::ScenarioReport::new(
            self.name(),
            self.label(),
            figures,
            deliveries,
            problems,
            detail,
        )
    }
}
