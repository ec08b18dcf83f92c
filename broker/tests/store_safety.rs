//! The store against what the disk and the operator do, with the real `ternd`: a data
//! directory too small for the ring files stops ternd at start (never a SIGBUS later),
//! damaged ring files are copied aside and repaired without losing the intact records, and
//! ring files of another shard count are refused rather than silently replaced by empty logs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{temp_dir, ternd_exit, BinClient, Broker, Tmpfs, START_TIMEOUT};
use tern_protocol::binary::{
    AckResult, ClientFrame, Publish, PublishAck, ResumeToken, ServerFrame, StartPosition, Subscribe,
};

/// Publishes with an ack; returns the acknowledged (shard, sequence).
fn publish_acked(c: &mut BinClient, subject: &str, payload: &[u8], ack_id: u64) -> (u16, u64) {
    c.send(&ClientFrame::Publish(Publish {
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        payload: Bytes::copy_from_slice(payload),
        ack_id: Some(ack_id),
        ..Default::default()
    }));
    loop {
        match c.read_frame() {
            ServerFrame::PublishAck(PublishAck {
                ack_id: id,
                result:
                    AckResult::Stored {
                        shard, sequence, ..
                    },
            }) if id == ack_id => return (shard, sequence),
            ServerFrame::Message(_) | ServerFrame::Ping => {}
            other => panic!("expected the ack of {ack_id}, got {other:?}"),
        }
    }
}

/// Subscribes to `subject` from the oldest record held and returns the payloads of the
/// first `n` messages.
fn replay_all(c: &mut BinClient, subject: &str, n: usize) -> Vec<Vec<u8>> {
    c.send(&ClientFrame::Subscribe(Subscribe {
        sid: 1,
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        start: StartPosition::Resume(ResumeToken {
            epoch: c.welcome.log_epoch,
            last_sequences: Vec::new(),
        }),
        ..Default::default()
    }));
    let mut got = Vec::new();
    while got.len() < n {
        match c.read_frame() {
            ServerFrame::Message(m) => got.push(m.payload.to_vec()),
            ServerFrame::Ping => {}
            other => panic!("unexpected {other:?} after {} messages", got.len()),
        }
    }
    got
}

fn small_disk(size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(t) => Some(t),
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs: {why}");
            None
        }
    }
}

#[test]
fn a_data_dir_too_small_for_the_logs_stops_ternd_at_start_naming_the_file() {
    let Some(disk) = small_disk("2m") else { return };
    let dir = disk.path().display().to_string();
    let (status, stderr) = ternd_exit(
        &["--workers", "1", "--data-dir", &dir, "--log-size", "4MiB"],
        START_TIMEOUT + Duration::from_secs(5),
    );
    assert!(!status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("shard-0000-of-0001.ring"),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("cannot reserve 4198400 bytes"),
        "says how much it needs: {stderr}"
    );
    assert!(stderr.contains("bytes available"), "{stderr}");
}

#[test]
fn ring_files_of_another_worker_count_stop_ternd_with_what_to_do() {
    let dir = temp_dir("ternd-count");
    let d = dir.display().to_string();
    let args =
        |workers: &'static str| vec!["--workers", workers, "--data-dir", &d, "--log-size", "4MiB"];
    let mut broker = Broker::with_args(&args("2"));
    let mut c = BinClient::connect(broker.binary_addr());
    publish_acked(&mut c, "orders.kept", b"the only copy", 1);
    drop(c);
    broker.stop();

    let (status, stderr) = ternd_exit(&args("3"), START_TIMEOUT + Duration::from_secs(5));
    assert!(!status.success(), "{status}\n{stderr}");
    for part in [
        "holds the ring logs of 2 shards",
        "shard-0000-of-0002.ring, shard-0001-of-0002.ring",
        "started with --workers 3",
        "start ternd with --workers 2",
        "another --data-dir",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from:\n{stderr}");
    }
    assert!(
        !dir.join("shard-0000-of-0003.ring").exists(),
        "no empty logs were started beside the old ones"
    );

    // With the old count, the message is still there.
    let broker = Broker::with_args(&args("2"));
    let mut c = BinClient::connect(broker.binary_addr());
    assert_eq!(
        replay_all(&mut c, "orders.kept", 1),
        vec![b"the only copy".to_vec()]
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
