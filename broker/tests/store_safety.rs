//! The store against what the disk and the operator do, with the real `ternd`: a data
//! directory too small for the ring files stops ternd at start (never a SIGBUS later),
//! damaged ring files are copied aside and repaired without losing the intact records, and
//! ring files of another shard count are refused rather than silently replaced by empty logs.

mod common;

use std::time::Duration;

use common::{ternd_exit, Tmpfs, START_TIMEOUT};

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
