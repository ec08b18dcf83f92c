//! The store against what the disk, the operator and publishers do, with the real `ternd`: a
//! data directory too small for the ring files stops ternd at start (never a SIGBUS later),
//! ring files of another shard count are refused rather than silently replaced by empty
//! logs, and message ids are bounded in length and in number.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{temp_dir, ternd_exit, BinClient, Broker, Tmpfs, START_TIMEOUT};
use tern_protocol::binary::{
    AckResult, ClientFrame, ErrorCode, ErrorFrame, Publish, PublishAck, ResumeToken, ServerFrame,
    StartPosition, Subscribe,
};

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
    c.publish_acked("orders.kept", b"the only copy", 1);
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

/// Publishes with a message id and an ack; returns the ack's result.
fn publish_with_id(c: &mut BinClient, subject: &str, id: &[u8], ack_id: u64) -> AckResult {
    c.send(&ClientFrame::Publish(Publish {
        subject: Bytes::copy_from_slice(subject.as_bytes()),
        payload: Bytes::from_static(b"x"),
        message_id: Some(Bytes::copy_from_slice(id)),
        ack_id: Some(ack_id),
        ..Default::default()
    }));
    loop {
        match c.read_frame() {
            ServerFrame::PublishAck(PublishAck { ack_id: id, result }) if id == ack_id => {
                return result
            }
            ServerFrame::Message(_) | ServerFrame::Ping => {}
            other => panic!("expected the ack of {ack_id}, got {other:?}"),
        }
    }
}

#[test]
fn a_message_id_over_the_limit_is_refused_and_the_dedupe_window_stays_bounded() {
    let broker = Broker::with_args(&[
        "--workers",
        "1",
        "--dedupe-max-ids",
        "50",
        "--monitor",
        "127.0.0.1:0",
    ]);
    let mut c = BinClient::connect(broker.binary_addr());

    // Over max_message_id (256 bytes by default): refused, with the code and the limit.
    match publish_with_id(&mut c, "orders", &[b'i'; 257], 1) {
        AckResult::Refused { code, message } => {
            assert_eq!(code, ErrorCode::InvalidOption);
            let text = String::from_utf8_lossy(&message);
            assert!(text.contains("257 bytes"), "{text}");
            assert!(text.contains("max_message_id (256 bytes)"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Without an ack: a non-fatal ERROR, and the connection carries on.
    c.send(&ClientFrame::Publish(Publish {
        subject: Bytes::from_static(b"orders"),
        payload: Bytes::from_static(b"x"),
        message_id: Some(Bytes::from(vec![b'j'; 60_000])),
        ..Default::default()
    }));
    match c.read_frame() {
        ServerFrame::Error(ErrorFrame {
            code: ErrorCode::InvalidOption,
            fatal: false,
            ..
        }) => {}
        other => panic!("expected a non-fatal InvalidOption, got {other:?}"),
    }
    // At the limit: stored, and a repeat is a duplicate.
    let at_limit = [b'k'; 256];
    assert!(matches!(
        publish_with_id(&mut c, "orders", &at_limit, 2),
        AckResult::Stored {
            duplicate: false,
            ..
        }
    ));
    assert!(matches!(
        publish_with_id(&mut c, "orders", &at_limit, 3),
        AckResult::Stored {
            duplicate: true,
            ..
        }
    ));

    // Many distinct large ids: the window never holds more than its cap; the oldest go
    // first, and each one forgotten is counted.
    for i in 0..500u64 {
        let id = format!("{i:0>250}");
        let result = publish_with_id(&mut c, "orders", id.as_bytes(), 10 + i);
        assert!(
            matches!(
                result,
                AckResult::Stored {
                    duplicate: false,
                    ..
                }
            ),
            "{result:?}"
        );
    }
    let v = broker.varz_until(|v| v["dedupe_evicted"].as_u64() == Some(451));
    assert_eq!(v["dedupe_ids"].as_u64(), Some(50), "{v}");
    assert_eq!(v["message_ids_refused"].as_u64(), Some(2), "{v}");
    // The newest is still remembered, the oldest was forgotten (stored again).
    let newest = format!("{:0>250}", 499);
    assert!(matches!(
        publish_with_id(&mut c, "orders", newest.as_bytes(), 9000),
        AckResult::Stored {
            duplicate: true,
            ..
        }
    ));
    assert!(matches!(
        publish_with_id(&mut c, "orders", &at_limit, 9001),
        AckResult::Stored {
            duplicate: false,
            ..
        }
    ));
}
