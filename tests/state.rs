//! The state store as its callers see it: round trips through redb, file
//! permissions, transaction atomicity, the serial, the digest key, the
//! applier lock across threads and processes, and readers beside a writer.

use mcpctl::model::{
    AppliedSpec, Backoff, Change, Endpoint, HistoryEntry, Instance, InstanceId, Intent, IntentOp,
    Snapshot, SpecHash, Status, Suspension, Timestamp,
};
use mcpctl::state::{HISTORY_KEPT, StateError, Store};
use miette::Diagnostic;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

fn state_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.redb")
}

fn instance(n: u32) -> Instance {
    let at = Timestamp(1_700_000_000_000 + i64::from(n));
    let mut i = Instance {
        id: InstanceId(format!("01jinstance{n:04}")),
        server: format!("server-{n}"),
        status: Status::Starting,
        handle: Some(format!("container-{n}")),
        endpoint: Some(Endpoint::Http(format!(
            "http://127.0.0.1:{}/mcp",
            20_000 + n
        ))),
        spec_hash: SpecHash(format!("sha256:{n:064x}")),
        created_at: at,
        transitioned_at: at,
        restarts: n,
        restarts_at_start: 0,
        reason: String::new(),
        history: Vec::new(),
        mcp: None,
        liveness: Default::default(),
        replaces: None,
    };
    i.transition(
        Status::Running,
        "probe ok",
        at.plus(std::time::Duration::from_secs(1)),
    );
    i
}

fn applied(n: u32) -> AppliedSpec {
    AppliedSpec {
        hash: SpecHash(format!("sha256:{n:064x}")),
        canonical: format!(
            "apiVersion: mcpctl/v1\nkind: McpServer\nmetadata:\n  name: server-{n}\n"
        ),
        replicas: n + 1,
        applied_at: Timestamp(1_700_000_100_000),
        previous: None,
    }
}

fn intent(n: u32, op: IntentOp) -> Intent {
    Intent {
        instance: InstanceId(format!("01jintent{n:04}")),
        server: format!("server-{n}"),
        spec_hash: SpecHash(format!("sha256:{n:064x}")),
        op,
        at: Timestamp(1_700_000_200_000),
        replaces: None,
    }
}

fn backoff(n: u32) -> Backoff {
    Backoff {
        failures: n,
        until: Timestamp(1_700_000_300_000),
        reason: format!("exited with code {n}"),
        spec_hash: Some(mcpctl::model::SpecHash(format!("h{n}"))),
    }
}

fn suspension() -> Suspension {
    Suspension {
        at: Timestamp(1_700_000_500_000),
        by: "mcpctl suspend server-1".into(),
    }
}

fn history(n: usize) -> HistoryEntry {
    HistoryEntry {
        at: Timestamp(1_700_000_400_000),
        revision: format!("rev-{n}"),
        source: "git+https://example.test/fleet.git".into(),
        actions: n,
        outcome: "ok".into(),
        changes: vec![Change {
            action: "start".into(),
            server: format!("server-{n}"),
            instance: None,
            reason: "scale up 0 -> 1".into(),
        }],
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_table_round_trips_through_update_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    let (a, b) = (instance(1), instance(2));
    let (create, remove) = (intent(1, IntentOp::Create), intent(2, IntentOp::Remove));

    store
        .update(|t| {
            t.put_instance(&a)?;
            t.put_instance(&b)?;
            t.put_server("server-1", &applied(1))?;
            t.put_server("server-2", &applied(2))?;
            t.put_intent(&create)?;
            t.put_intent(&remove)?;
            t.put_backoff("server-2", &backoff(3))?;
            t.set_revision("0123abcd")?;
            t.suspend("server-1", &suspension())?;
            t.push_history(&history(1))?;
            t.push_history(&history(2))
        })
        .unwrap();

    let expected = Snapshot {
        serial: 1,
        revision: Some("0123abcd".into()),
        instances: [(a.id.clone(), a.clone()), (b.id.clone(), b.clone())].into(),
        servers: [
            ("server-1".to_owned(), applied(1)),
            ("server-2".to_owned(), applied(2)),
        ]
        .into(),
        intents: [
            (create.instance.clone(), create.clone()),
            (remove.instance.clone(), remove.clone()),
        ]
        .into(),
        backoff: [("server-2".to_owned(), backoff(3))].into(),
        suspended: [("server-1".to_owned(), suspension())].into(),
    };
    assert_eq!(store.load().unwrap(), expected);
    assert_eq!(store.history().unwrap(), vec![history(1), history(2)]);

    // Removals, and removals of what is not there, in a second transaction.
    store
        .update(|t| {
            t.remove_instance(&a.id)?;
            t.remove_instance(&InstanceId("01jnosuchinstance".into()))?;
            t.remove_server("server-1")?;
            t.clear_intent(&create.instance)?;
            t.clear_backoff("server-2")?;
            t.clear_backoff("server-9")?;
            t.set_revision("4567ef01")?;
            t.push_history(&history(3))
        })
        .unwrap();

    let loaded = store.load().unwrap();
    assert_eq!(loaded.serial, 2);
    assert_eq!(loaded.revision.as_deref(), Some("4567ef01"));
    assert_eq!(loaded.instances, [(b.id.clone(), b)].into());
    assert_eq!(loaded.servers, [("server-2".to_owned(), applied(2))].into());
    assert_eq!(loaded.intents, [(remove.instance.clone(), remove)].into());
    assert!(loaded.backoff.is_empty());
    assert_eq!(
        store.history().unwrap(),
        vec![history(1), history(2), history(3)]
    );

    // A second handle on the same path sees the same data: nothing is cached.
    assert_eq!(Store::new(store.path()).load().unwrap(), loaded);
}

#[test]
fn a_new_state_file_is_private_and_its_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("state.redb");
    let store = Store::new(&path);

    store.update(|t| t.set_revision("r1")).unwrap();

    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);

    let lock = store.lock_applier("mcpctl apply").unwrap();
    assert_eq!(lock.path(), store.lock_path());
    assert_eq!(store.lock_path(), dir.path().join("a/b/state.redb.lock"));
    assert_eq!(mode(lock.path()), 0o600);
}

#[test]
fn an_existing_file_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    store.update(|t| t.set_revision("r1")).unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o640)).unwrap();

    store.update(|t| t.set_revision("r2")).unwrap();

    assert_eq!(mode(store.path()), 0o640);
}

#[test]
fn a_failed_update_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));

    // Even the very first transaction leaves an empty snapshot behind.
    let err = store
        .update(|t| {
            t.put_instance(&instance(1))?;
            Err::<(), _>(StateError::Other {
                path: t.path().to_path_buf(),
                message: "runtime refused".into(),
            })
        })
        .unwrap_err();
    assert!(err.to_string().ends_with(": runtime refused"), "{err}");
    assert_eq!(store.load().unwrap(), Snapshot::default());

    store
        .update(|t| {
            t.put_instance(&instance(1))?;
            t.push_history(&history(1))
        })
        .unwrap();
    let before = store.load().unwrap();
    assert_eq!(before.serial, 1);

    let result: Result<(), _> = store.update(|t| {
        t.remove_instance(&instance(1).id)?;
        t.put_server("server-9", &applied(9))?;
        t.set_revision("never")?;
        t.push_history(&history(2))?;
        Err(StateError::Other {
            path: t.path().to_path_buf(),
            message: "stop".into(),
        })
    });

    assert!(matches!(result, Err(StateError::Other { .. })));
    assert_eq!(store.load().unwrap(), before);
    assert_eq!(store.history().unwrap(), vec![history(1)]);
}

/// `watch` writes an entry per pass that acts: the file keeps the newest
/// ones only, numbered on from the last.
#[test]
fn the_history_keeps_only_its_newest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    let kept = HISTORY_KEPT as usize;
    store
        .update(|t| {
            for n in 1..=kept + 3 {
                t.push_history(&history(n))?;
            }
            Ok(())
        })
        .unwrap();
    let entries = store.history().unwrap();
    assert_eq!(entries.len(), kept);
    assert_eq!(entries[0], history(4), "the three oldest are gone");
    assert_eq!(entries[kept - 1], history(kept + 3));
    store.update(|t| t.push_history(&history(0))).unwrap();
    let entries = store.history().unwrap();
    assert_eq!(entries.len(), kept);
    assert_eq!(
        (entries[0].clone(), entries[kept - 1].clone()),
        (history(5), history(0))
    );
}

#[test]
fn the_serial_counts_updates_and_update_returns_the_closure_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    assert_eq!(store.load().unwrap().serial, 0);

    for n in 1..=3u32 {
        let got = store
            .update(|t| {
                t.put_backoff("s", &backoff(n))?;
                Ok(n * 10)
            })
            .unwrap();
        assert_eq!(got, n * 10);
        assert_eq!(store.load().unwrap().serial, u64::from(n));
    }
    // An update that changes nothing is still a write.
    store.update(|_| Ok(())).unwrap();
    assert_eq!(store.load().unwrap().serial, 4);
}

#[test]
fn loading_a_missing_file_is_empty_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("state.redb");
    let store = Store::new(&path);

    assert_eq!(store.load().unwrap(), Snapshot::default());
    assert!(store.history().unwrap().is_empty());

    assert!(!path.exists());
    assert!(!dir.path().join("sub").exists());
}

#[test]
fn an_empty_file_loads_as_an_empty_snapshot() {
    // What a writer leaves between creating the file and redb initialising it.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    std::fs::write(store.path(), b"").unwrap();

    assert_eq!(store.load().unwrap(), Snapshot::default());

    store.update(|t| t.set_revision("r1")).unwrap();
    assert_eq!(store.load().unwrap().revision.as_deref(), Some("r1"));
}

#[test]
fn a_garbage_file_is_refused_with_advice_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    let garbage = b"servers:\n  - this is YAML, not a redb file\n".repeat(200);
    std::fs::write(store.path(), &garbage).unwrap();

    let shown = store.path().display().to_string();
    for err in [
        store.load().unwrap_err(),
        store.update(|t| t.set_revision("r")).unwrap_err(),
        store.digest_key().unwrap_err(),
    ] {
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "state file {shown} is damaged or is not an mcpctl state file: "
            )),
            "{msg}"
        );
        let help = err.help().map(|h| h.to_string()).unwrap_or_default();
        assert!(
            help.contains(&format!("mv {shown} {shown}.broken")),
            "{help}"
        );
    }
    assert_eq!(std::fs::read(store.path()).unwrap(), garbage);
}

#[test]
fn the_digest_key_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));

    let key = store.digest_key().unwrap();
    assert_ne!(key, [0u8; 32]);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(store.digest_key().unwrap(), key);
    assert_eq!(Store::new(store.path()).digest_key().unwrap(), key);

    // Updates neither disturb the key nor depend on it.
    store.update(|t| t.set_revision("r1")).unwrap();
    assert_eq!(store.digest_key().unwrap(), key);
    assert_eq!(store.load().unwrap().serial, 1);

    // Another process reads the same key.
    let out = child(ChildMode::DigestKey, store.path())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let theirs = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DIGEST-KEY "))
        .unwrap_or_else(|| panic!("no key in child output: {stdout}"));
    assert_eq!(theirs, to_hex(&key));

    // A different state file has a different key.
    let other = Store::new(dir.path().join("other.redb"));
    assert_ne!(other.digest_key().unwrap(), key);
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_second_applier_in_the_same_process_is_refused_until_the_first_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_in(&dir);
    let first = Store::new(&path).lock_applier("mcpctl watch").unwrap();

    let err = Store::new(&path).lock_applier("mcpctl apply").unwrap_err();
    let StateError::Locked { holder, .. } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    let prefix = format!("pid {} (mcpctl watch) since 20", std::process::id());
    assert!(holder.starts_with(&prefix), "{holder}");
    assert!(holder.ends_with('Z'), "{holder}");
    assert_eq!(
        err.to_string(),
        format!(
            "state file {} is locked by another applier: {holder}; wait for it to finish or stop it",
            path.display()
        )
    );

    // Readers and writers of the data are not applier-locked.
    let store = Store::new(&path);
    store.update(|t| t.set_revision("r1")).unwrap();
    assert_eq!(store.load().unwrap().serial, 1);

    drop(first);
    let second = store.lock_applier("mcpctl apply").unwrap();
    let recorded = std::fs::read_to_string(second.path()).unwrap();
    assert!(
        recorded.starts_with(&format!("pid {} (mcpctl apply) since ", std::process::id())),
        "{recorded}"
    );
}

/// A child process holds the lock; `kill -9` must release it.
fn assert_killed_holder_releases_the_lock(mut holder: Child, path: &Path, expect_holder: &str) {
    let stdout = holder.stdout.take().unwrap();
    wait_for_line(stdout, "LOCKED");

    let err = Store::new(path).lock_applier("mcpctl apply").unwrap_err();
    match &err {
        StateError::Locked { holder: text, .. } => {
            assert!(text.starts_with(expect_holder), "{text}")
        }
        _ => panic!("expected Locked, got {err:?}"),
    }

    holder.kill().unwrap(); // SIGKILL: no chance to clean up.
    let status = holder.wait().unwrap();
    assert_eq!(status.signal(), Some(9));

    let lock = Store::new(path).lock_applier("mcpctl apply").unwrap();
    let recorded = std::fs::read_to_string(lock.path()).unwrap();
    assert!(
        recorded.starts_with(&format!("pid {} (mcpctl apply)", std::process::id())),
        "{recorded}"
    );
}

fn wait_for_line(stdout: ChildStdout, marker: &str) {
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().trim() == marker {
            return;
        }
    }
    panic!("the child exited before printing {marker}");
}

#[test]
fn a_killed_mcpctl_applier_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_in(&dir);
    let holder = child(ChildMode::HoldLock, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let expect = format!("pid {} (mcpctl watch) since ", holder.id());
    assert_killed_holder_releases_the_lock(holder, &path, &expect);
}

#[test]
fn a_killed_foreign_flock_holder_releases_the_lock() {
    // Any flock(2) on the lock file counts, which is also what lets an
    // operator fence mcpctl off with `flock(1)`. The holder here never goes
    // through `Store`, and writes its own line.
    let dir = tempfile::tempdir().unwrap();
    let path = state_in(&dir);
    let holder = child(ChildMode::ForeignFlock, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let expect = format!("pid {} (foreign flock) since now", holder.id());
    assert_killed_holder_releases_the_lock(holder, &path, &expect);
}

#[test]
fn readers_keep_working_while_another_thread_writes() {
    const UPDATES: u32 = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    // Exists before the reader starts, so every load opens a real file.
    store.update(|_| Ok(())).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (first_load, reader_is_loading) = mpsc::channel();

    let writer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            // Whichever thread the OS starts first, the writes begin only
            // once the reader is at work, so the two do overlap.
            reader_is_loading.recv().unwrap();
            for n in 0..UPDATES {
                store
                    .update(|t| {
                        t.put_instance(&instance(n))?;
                        t.push_history(&history(n as usize))
                    })
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut last = 0;
            let mut loads = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let s = store.load().unwrap();
                // One instance per update after the first: a torn read would break this.
                assert_eq!(s.instances.len() as u64, s.serial - 1);
                assert!(
                    s.serial >= last,
                    "serial went back from {last} to {}",
                    s.serial
                );
                last = s.serial;
                seen.insert(s.serial);
                if loads == 0 {
                    first_load.send(()).unwrap();
                }
                loads += 1;
                if finished || loads > 100_000 {
                    return (seen, last);
                }
            }
        })
    };

    writer.join().unwrap();
    let (seen, last) = reader.join().unwrap();
    assert_eq!(last, u64::from(UPDATES) + 1);
    // Serials 2..=UPDATES exist only between two of the writer's commits.
    // Turns on the file go in arrival order, so a reader waiting when a
    // write ends loads before the next write: it sees nearly every one of
    // them, missing one only if the OS stalls it for a whole write. A reader
    // shut out by the writer sees almost none.
    let meanwhile = seen.range(2..=u64::from(UPDATES)).count();
    assert!(
        meanwhile >= (UPDATES as usize - 1) / 2,
        "only {meanwhile} of {} loads landed between writes; serials seen: {seen:?}",
        UPDATES - 1
    );
    assert_eq!(store.history().unwrap().len(), UPDATES as usize);
}

#[test]
fn a_reader_and_a_writer_in_different_processes_take_turns() {
    const UPDATES: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    store.update(|_| Ok(())).unwrap();

    let mut writer = child(ChildMode::WriteLoop(UPDATES), store.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut loads = 0;
    // Load once per committed update, while the child goes on to the next:
    // the two processes contend for the file and both must get through.
    for line in lines {
        let line = line.unwrap();
        let Some(n) = line.trim().strip_prefix("UPDATED ") else {
            continue;
        };
        let n: u64 = n.parse().unwrap();
        let s = store.load().unwrap();
        assert!(
            s.serial > n,
            "update {n} committed but serial is {}",
            s.serial
        );
        assert_eq!(s.instances.len() as u64, s.serial - 1);
        loads += 1;
    }
    assert!(writer.wait().unwrap().success());
    assert_eq!(loads, UPDATES);
    assert_eq!(store.load().unwrap().serial, u64::from(UPDATES) + 1);
}

#[test]
fn a_process_killed_with_the_file_open_leaves_it_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(state_in(&dir));
    store
        .update(|t| {
            t.put_instance(&instance(1))?;
            t.set_revision("r1")
        })
        .unwrap();
    let before = store.load().unwrap();

    // redb marks the file as needing recovery while it is open; a read-only
    // open refuses such a file, so `load` has to take the repairing path.
    let mut holder = child(ChildMode::HoldFile, store.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(holder.stdout.take().unwrap(), "OPEN");
    holder.kill().unwrap();
    assert_eq!(holder.wait().unwrap().signal(), Some(9));

    assert_eq!(store.load().unwrap(), before);
    store.update(|t| t.set_revision("r2")).unwrap();
    assert_eq!(store.load().unwrap().serial, before.serial + 1);
}

// ---- child processes: this test binary, re-run with an environment variable ----

const CHILD_MODE: &str = "MCPCTL_STATE_TEST_CHILD";
const CHILD_PATH: &str = "MCPCTL_STATE_TEST_PATH";

#[derive(Clone, Copy)]
enum ChildMode {
    HoldLock,
    DigestKey,
    WriteLoop(u32),
    /// Opens the file with redb directly and keeps it open.
    HoldFile,
    /// flock(2)s the applier lock file with std alone, as another program would.
    ForeignFlock,
}

fn child(mode: ChildMode, path: &Path) -> Command {
    let mode = match mode {
        ChildMode::HoldLock => "hold-lock".to_owned(),
        ChildMode::DigestKey => "digest-key".to_owned(),
        ChildMode::WriteLoop(n) => format!("write-loop {n}"),
        ChildMode::HoldFile => "hold-file".to_owned(),
        ChildMode::ForeignFlock => "foreign-flock".to_owned(),
    };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_process_entry", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_MODE, mode)
        .env(CHILD_PATH, path);
    cmd
}

/// Not a test: the body of the child processes above. Ignored, and a no-op
/// without the environment variable, so test runs skip it.
#[test]
#[ignore = "run as a child process by other tests"]
fn child_process_entry() {
    let (Ok(mode), Some(path)) = (std::env::var(CHILD_MODE), std::env::var_os(CHILD_PATH)) else {
        return;
    };
    let store = Store::new(PathBuf::from(path));
    let mut out = std::io::stdout();
    match mode.as_str() {
        "hold-lock" => {
            let _lock = store.lock_applier("mcpctl watch").unwrap();
            writeln!(out, "\nLOCKED").unwrap();
            out.flush().unwrap();
            // Hold until killed: the parent keeps stdin open.
            let _ = std::io::stdin().lines().count();
        }
        "hold-file" => {
            let _db = redb::Database::open(store.path()).unwrap();
            writeln!(out, "\nOPEN").unwrap();
            out.flush().unwrap();
            let _ = std::io::stdin().lines().count();
        }
        "foreign-flock" => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(store.lock_path())
                .unwrap();
            // std's `File::lock` is flock(2) with LOCK_EX on Linux.
            file.lock().unwrap();
            file.set_len(0).unwrap();
            writeln!(file, "pid {} (foreign flock) since now", std::process::id()).unwrap();
            writeln!(out, "\nLOCKED").unwrap();
            out.flush().unwrap();
            let _ = std::io::stdin().lines().count();
        }
        "digest-key" => {
            let key = store.digest_key().unwrap();
            writeln!(out, "\nDIGEST-KEY {}", to_hex(&key)).unwrap();
        }
        loop_mode if loop_mode.starts_with("write-loop ") => {
            let count: u32 = loop_mode["write-loop ".len()..].parse().unwrap();
            for n in 0..count {
                store.update(|t| t.put_instance(&instance(n))).unwrap();
                writeln!(out, "\nUPDATED {}", n + 1).unwrap();
                out.flush().unwrap();
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}
