//! A full filesystem: a ring file's blocks are reserved when it is created or opened, so a
//! disk without room for it is an error at open that names the file and the space it needs,
//! never a SIGBUS later when an append stores into a block the filesystem cannot give.
//!
//! Each test mounts a 2 MiB tmpfs; where mounting is not permitted, it says so and skips.

mod common;

use std::fs;

use common::{scratch, Tmpfs};
use tern_log::{Fsync, LogError, Record, RingLog};

const MIB: u64 = 1 << 20;

fn small_disk() -> Option<Tmpfs> {
    match Tmpfs::mount("2m") {
        Ok(t) => Some(t),
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs: {why}");
            None
        }
    }
}

#[test]
fn a_new_ring_larger_than_the_disk_is_refused_at_open_naming_the_file() {
    let Some(disk) = small_disk() else { return };
    let path = disk.path().join("shard-0000-of-0001.ring");
    let err = RingLog::open(&path, 4 * MIB, Fsync::Never).unwrap_err();
    let text = err.to_string();
    match &err {
        LogError::NoSpace {
            needed, available, ..
        } => {
            assert_eq!(*needed, 4 * MIB + 4096);
            let available = available.expect("statvfs works on tmpfs");
            assert!(available < *needed, "{text}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("4198400 bytes"), "{text}");
    assert!(text.contains("bytes available"), "{text}");
    // Nothing is left behind: no ring file, no temporary file.
    let left: Vec<_> = fs::read_dir(disk.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_sparse_ring_is_reserved_when_opened_or_refused() {
    let Some(disk) = small_disk() else { return };
    // A valid ring of 1.5 MiB made elsewhere, copied onto the small disk as a sparse file
    // (its header page written, the rest a hole), as an older version left its rings.
    let elsewhere = scratch();
    let src = elsewhere.path().join("r");
    let (mut log, _) = RingLog::open(&src, 3 * MIB / 2, Fsync::Never).unwrap();
    log.append(&Record::new(b"a", b"kept")).unwrap();
    log.close().unwrap();
    let image = fs::read(&src).unwrap();
    let sparse = |name: &str| {
        let p = disk.path().join(name);
        let f = fs::File::create(&p).unwrap();
        use std::io::Write;
        (&f).write_all(&image[..8192]).unwrap();
        f.set_len(image.len() as u64).unwrap();
        p
    };
    // One fits: it is reserved on open and works.
    let first = sparse("first.ring");
    let (mut log, rec) = RingLog::open(&first, 3 * MIB / 2, Fsync::Never).unwrap();
    assert_eq!(rec.records, 1);
    log.append(&Record::new(b"a", &[7; 1000])).unwrap();
    drop(log);
    // The second cannot be reserved: refused at open, its bytes unchanged.
    let second = sparse("second.ring");
    let before = fs::read(&second).unwrap();
    let err = RingLog::open(&second, 3 * MIB / 2, Fsync::Never).unwrap_err();
    assert!(matches!(err, LogError::NoSpace { .. }), "{err}");
    assert!(
        err.to_string().contains(&second.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(&second).unwrap(), before);
}

#[test]
fn a_damaged_ring_that_cannot_be_copied_aside_is_refused_unchanged() {
    let Some(disk) = small_disk() else { return };
    // A ring of 1.25 MiB with records, one of them damaged, on a 2 MiB disk: repairing it
    // needs a copy of 1.25 MiB first, and there is not that much room left.
    let elsewhere = scratch();
    let src = elsewhere.path().join("r");
    let cap = 5 * MIB / 4;
    let (mut log, _) = RingLog::open(&src, cap, Fsync::Never).unwrap();
    for i in 0..100u64 {
        log.append(&Record::new(b"orders", &i.to_le_bytes()))
            .unwrap();
    }
    log.close().unwrap();
    let mut image = fs::read(&src).unwrap();
    image[4096 + 10 * 56 + 45] ^= 0x01; // inside record 11's payload
    let path = disk.path().join("shard-0000-of-0001.ring");
    fs::write(&path, &image).unwrap();

    let err = RingLog::open(&path, cap, Fsync::Never).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LogError::CannotPreserve { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("1 record(s) lost"), "{text}");
    assert!(
        text.contains(&format!("{} bytes needed", image.len())),
        "{text}"
    );
    assert!(text.contains("the file was not changed"), "{text}");
    assert_eq!(
        fs::read(&path).unwrap(),
        image,
        "the damaged file is untouched"
    );
    let names: Vec<String> = fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["shard-0000-of-0001.ring"],
        "no partial copy is left"
    );

    // With room (the file moved to a larger disk), the same file is copied and repaired.
    let roomy = elsewhere.path().join("moved");
    fs::write(&roomy, &image).unwrap();
    let (log, rec) = RingLog::open(&roomy, cap, Fsync::Never).unwrap();
    assert_eq!((log.len(), rec.lost_records), (99, 1));
    assert_eq!(fs::read(rec.damaged_copy.unwrap()).unwrap(), image);
}
