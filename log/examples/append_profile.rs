//! A fixed run of appends for an instruction profiler (`valgrind --tool=callgrind`): the
//! broker's shape of use (batched writes, a flush per loop turn of 64 appends), 200,000
//! records of the `tern-bench pubsub` kind (subject `bench.pubsub`, 16-byte payload), then
//! the same number again into the full ring, where every append evicts.
//!
//! `cargo run --release -p tern-log --example append_profile [records] [payload bytes]`
//!
//! Never: measures time; it only gives a profiler a deterministic run to count.

use tern_log::{Fsync, Record, RingLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let payload = vec![0x5a_u8; size];
    let dir = tempfile::tempdir()?;
    let rec = Record::new(b"bench.pubsub", &payload);
    // A ring that holds the first run exactly, so the second one evicts on every append.
    let cap = records * rec.stored_len();
    let (mut log, _) = RingLog::open(&dir.path().join("profile.ring"), cap, Fsync::Never)?;
    log.batch_writes();
    for run in 0..2 {
        for i in 0..records {
            log.append(&Record {
                timestamp: run * records + i,
                ..rec
            })?;
            if i % 64 == 63 {
                log.flush()?;
            }
        }
        log.flush()?;
    }
    println!("next_seq {} first_seq {}", log.next_seq(), log.first_seq());
    Ok(())
}
