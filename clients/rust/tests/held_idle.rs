//! A client held back by a full lossless subscription waits for its application without
//! spinning: its I/O thread looks again every millisecond, it does not loop on the socket
//! it has chosen not to read.
//!
//! Alone in its file (its own process), so the only `tern-client-io` threads whose CPU time
//! it reads are its own two clients'.

mod common;

use std::time::Duration;

use common::{temp_dir, WAIT};
use tern_client::Client;

/// CPU time used so far by this process's client I/O threads (every `tern-client-io`).
fn client_io_cpu() -> Duration {
    let ticks: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            if comm.trim() != "tern-client-io" {
                return None;
            }
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // Fields after the name: state is field 3, utime and stime fields 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
        })
        .sum();
    // Clock ticks of 10 ms (USER_HZ is 100 on Linux).
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_client_held_by_a_full_lossless_subscription_does_not_spin() {
    let dir = temp_dir("held-idle");
    let data_dir = dir.display().to_string();
    // The broker pings every 50 ms: the held client's socket turns readable again and
    // again while it is not read.
    let server = common::broker::start(
        "127.0.0.1:0",
        &[
            "--data-dir",
            &data_dir,
            "--log-size",
            "4MiB",
            "--ping-interval",
            "50ms",
        ],
    );
    let url = format!("tern://{}", server.binary_addr().unwrap());
    let subscriber = Client::connect(&url).unwrap();
    let sub = subscriber
        .subscribe_builder("held.idle")
        .lossless(true)
        .capacity(2)
        .subscribe()
        .unwrap();
    subscriber.flush(WAIT).unwrap();
    let publisher = Client::connect(&url).unwrap();
    for i in 0..200u32 {
        publisher.publish("held.idle", i.to_string()).unwrap();
    }
    publisher.flush(WAIT).unwrap();
    // Held: two messages queued, the rest waiting in the client and at the broker.
    std::thread::sleep(Duration::from_millis(200));
    let before = client_io_cpu();
    std::thread::sleep(Duration::from_millis(1500));
    let used = client_io_cpu() - before;
    // A loop on the readable socket burns the whole 1.5 s; waiting costs a few ms.
    assert!(
        used < Duration::from_millis(300),
        "the held client's I/O thread used {used:?} of CPU in 1.5 s of waiting"
    );
    let got: Vec<u32> = (0..200)
        .map(|_| {
            let m = sub.recv_timeout(WAIT).expect("every message arrives");
            m.payload_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    drop(server);
}
