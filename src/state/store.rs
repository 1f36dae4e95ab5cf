//! redb persistence for the [`Snapshot`](super::Snapshot), and the applier lock.
//!
//! # File format
//! One redb file. String keys; values are JSON (`serde_json`) bytes, which
//! keeps the records readable with generic tools and lets fields be added
//! with `#[serde(default)]` rather than a migration. No value is an
//! `Option`, whose redb encoding changes in redb 5.
//!
//! | table       | key             | value                                          |
//! |-------------|-----------------|------------------------------------------------|
//! | `instances` | instance id     | [`Instance`]                                   |
//! | `servers`   | server name     | [`AppliedSpec`]                                |
//! | `intents`   | instance id     | [`Intent`]                                     |
//! | `backoff`   | server name     | [`Backoff`]                                    |
//! | `suspended` | server name     | [`Suspension`]                                 |
//! | `history`   | sequence (u64)  | [`HistoryEntry`], numbered from 1; the last [`HISTORY_KEPT`] |
//! | `meta`      | name            | raw bytes, see below                           |
//!
//! `meta` holds `schema_version` (u32, little-endian; see [`schema`]),
//! `serial` (u64, little-endian, bumped by every [`Store::update`]),
//! `revision` (UTF-8), `digest_key` (32 bytes: a cache of the scope's key,
//! which lives in the runtime or comes from the operator) and `fleet`
//! (JSON [`FleetId`]: the runtime, namespace and scope this file caches).
//!
//! # Sharing the file
//! redb locks a database file for as long as a `Database` value is open,
//! and a second open fails at once with `DatabaseAlreadyOpen`. A long-lived
//! handle in `watch` would therefore lock `get` and `plan` out for hours. So
//! a [`Store`] keeps nothing open: each call opens the file, runs one
//! transaction and closes it. Threads of one process queue for the file in
//! arrival order (see [`turn`]); against other processes, an open that finds
//! the file busy retries with a short back-off (2 ms doubling to 50 ms). Both
//! waits share one deadline, 10 s by default, after which the call fails
//! with [`StateError::Busy`].
//!
//! Reads open the file read-only: that writes and syncs nothing (tens of
//! microseconds, against milliseconds for a read-write open and close), and
//! read-only opens in different processes share the file. Only a file left
//! needing repair by a writer that died, or one that needs migrating, is
//! reopened read-write by a reader.
//!
//! Across processes this is not fair: a process that reopens the file the
//! instant it closes it can keep a sleeping one out. mcpctl's own writes come
//! one per action, between runtime calls that take far longer than a
//! transaction, so in practice a reader waits at most for one transaction.
//!
//! Who may *apply* is a separate question, answered by the applier lock (see
//! [`Store::lock_applier`]).

mod lock;
mod schema;
mod turn;

pub use lock::ApplyLock;

use crate::model::{
    AppliedSpec, Backoff, FleetId, HistoryEntry, Instance, InstanceId, Intent, Snapshot, Suspension,
};
use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, TableError, TableHandle, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const SERVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("servers");
const INTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("intents");
const BACKOFF: TableDefinition<&str, &[u8]> = TableDefinition::new("backoff");
const SUSPENDED: TableDefinition<&str, &[u8]> = TableDefinition::new("suspended");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// History entries kept, newest. `watch` writes one for every pass that
/// acts, so a server in a crash loop adds one per back-off (up to 288 a
/// day at its 5-minute cap) for as long as it lasts: unbounded, the file
/// and `mcpctl history` would grow with uptime. 500 is weeks of ordinary
/// applies, and a few hundred KB.
pub const HISTORY_KEPT: u64 = 500;

const SERIAL: &str = "serial";
const REVISION: &str = "revision";
const DIGEST_KEY: &str = "digest_key";
const FLEET: &str = "fleet";

/// How long an open waits for another process to let go of the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Transactions here take a few milliseconds, so start retrying at that
/// scale, and cap the pause so a waiter notices the file is free promptly.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Errors of the state layer. Each names the state file.
///
/// Messages include their cause rather than exposing it as
/// [`source`](std::error::Error::source), so that a one-line `{}` in a log is
/// complete and miette's report does not print the cause twice.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StateError {
    /// The file system refused an operation on the state file, its lock file or its directory.
    #[error("state file {path}: cannot {action}: {cause}")]
    Io {
        path: PathBuf,
        action: &'static str,
        cause: std::io::Error,
    },

    /// Another process kept the state file open for longer than the busy timeout.
    #[error(
        "state file {path} is busy: another mcpctl process has held it for over {}",
        seconds_or_millis(*waited)
    )]
    #[diagnostic(help(
        "mcpctl holds the file only for the length of one transaction; look for a hung mcpctl process (`fuser {}`)",
        path.display()
    ))]
    Busy { path: PathBuf, waited: Duration },

    /// The file is not a redb database, or redb or mcpctl found it damaged.
    #[error("state file {path} is damaged or is not an mcpctl state file: {detail}")]
    #[diagnostic(help(
        "move it aside (`mv {0} {0}.broken`) and run mcpctl again; it starts from an empty snapshot when the file is missing",
        path.display()
    ))]
    Corrupt { path: PathBuf, detail: String },

    /// One record could not be decoded.
    #[error("state file {path}: cannot read {table} entry {key:?}: {detail}")]
    #[diagnostic(help(
        "the file may be damaged; move it aside (`mv {0} {0}.broken`) and run mcpctl again",
        path.display()
    ))]
    Decode {
        path: PathBuf,
        table: String,
        key: String,
        detail: String,
    },

    /// A value could not be encoded. Not expected with the snapshot's types.
    #[error("state file {path}: cannot encode {what}: {detail}")]
    Encode {
        path: PathBuf,
        what: String,
        detail: String,
    },

    /// The file was written by a newer mcpctl, whose format this binary cannot read safely.
    #[error(
        "state file {path} was written by a newer mcpctl (schema {found}, this binary knows {known}); upgrade mcpctl"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        known: u32,
    },

    /// Upgrading the file from an older schema failed; the file was left as it was.
    #[error("state file {path}: cannot migrate from schema {from}: {cause}")]
    Migration {
        path: PathBuf,
        from: u32,
        cause: String,
    },

    /// redb failed during an operation.
    #[error("state file {path}: {operation} failed: {cause}")]
    Database {
        path: PathBuf,
        operation: String,
        // Boxed: redb's error is large and would bloat every Result here.
        cause: Box<redb::Error>,
    },

    /// The random source failed while creating the secret-digest key.
    #[error("state file {path}: cannot generate the secret-digest key: {detail}")]
    Random { path: PathBuf, detail: String },

    /// Another process holds the applier lock.
    #[error(
        "state file {path} is locked by another applier: {holder}; wait for it to finish or stop it"
    )]
    Locked { path: PathBuf, holder: String },

    /// The file caches another fleet than the one this command acts on.
    #[error(
        "state file {path} caches another fleet ({recorded}), not the one this command acts on ({given})"
    )]
    #[diagnostic(help(
        "to use this file, run with {}; to act on the other fleet, point --state (or MCPCTL_STATE) at its own file, or at a new path: a fresh state adopts what runs",
        recorded.flags()
    ))]
    OtherFleet {
        path: PathBuf,
        // Boxed: they would make every Result of this layer large.
        recorded: Box<FleetId>,
        given: Box<FleetId>,
    },

    /// Raised by callers, typically inside [`Store::update`] to abort it.
    #[error("state file {path}: {message}")]
    Other { path: PathBuf, message: String },
}

impl StateError {
    /// Whether trying again later may succeed: the file was busy, the
    /// file system or the database refused for a moment, or another applier
    /// holds the lock. A damaged file, a newer format or a failed migration
    /// stays as it is until somebody acts, so a long-running process
    /// reports those and stops.
    pub fn is_passing(&self) -> bool {
        matches!(
            self,
            StateError::Busy { .. }
                | StateError::Io { .. }
                | StateError::Database { .. }
                | StateError::Random { .. }
                | StateError::Locked { .. }
        )
    }
}

fn seconds_or_millis(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Maps a redb failure during `operation`, telling damage apart from I/O and the rest.
pub(super) fn db_err<E: Into<redb::Error>>(
    path: &Path,
    operation: &str,
) -> impl FnOnce(E) -> StateError {
    let path = path.to_path_buf();
    let operation = operation.to_owned();
    move |e| match e.into() {
        redb::Error::Corrupted(detail) => StateError::Corrupt { path, detail },
        // Only a file we did not write has tables of other types.
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => StateError::Corrupt {
            path,
            detail: e.to_string(),
        },
        // redb reports a file that is not a database (wrong magic) this way.
        redb::Error::Io(cause) if cause.kind() == ErrorKind::InvalidData => StateError::Corrupt {
            path,
            detail: cause.to_string(),
        },
        cause => StateError::Database {
            path,
            operation,
            cause: Box::new(cause),
        },
    }
}

fn decode_err(path: &Path, table: &str, key: &str, detail: impl ToString) -> StateError {
    StateError::Decode {
        path: path.to_path_buf(),
        table: table.to_owned(),
        key: key.to_owned(),
        detail: detail.to_string(),
    }
}

/// A handle on a state file. Holds no file open between calls, so other
/// processes (`get`, `plan`) can read while an applier works.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    busy_timeout: Duration,
    /// Called each time an open finds the file held, so tests can act at that moment.
    #[cfg(test)]
    on_busy: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

/// One call's claim on the file: its turn among this process's threads and
/// the deadline its opens share. Databases opened through it must be dropped
/// before it, which declaring them after it ensures.
struct Session<'s> {
    store: &'s Store,
    deadline: Instant,
    _turn: turn::Turn,
}

/// A write transaction on the snapshot, lent to the closure of [`Store::update`].
pub struct Txn<'a> {
    txn: &'a WriteTransaction,
    path: &'a Path,
}

impl Store {
    pub fn new(path: impl Into<PathBuf>) -> Store {
        Store {
            path: path.into(),
            busy_timeout: BUSY_TIMEOUT,
            #[cfg(test)]
            on_busy: None,
        }
    }

    /// How long a call waits for another process to release the file before
    /// failing with [`StateError::Busy`]. Ten seconds unless changed.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Store {
        self.busy_timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The applier lock file: the state file's path with `.lock` appended.
    pub fn lock_path(&self) -> PathBuf {
        lock::lock_path(&self.path)
    }

    /// Reads the whole snapshot in one read transaction. A missing file is
    /// an empty snapshot, and is not created.
    pub fn load(&self) -> Result<Snapshot, StateError> {
        Ok(self
            .read(|txn| read_snapshot(txn, &self.path))?
            .unwrap_or_default())
    }

    /// The history, oldest first (the last [`HISTORY_KEPT`] entries). Kept
    /// out of [`Snapshot`] because planning never needs it.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let entries = self.read(|txn| {
            let mut entries = Vec::new();
            if let Some(table) = open_read(txn, HISTORY, &self.path)? {
                let op = "read the history";
                for item in table.iter().map_err(db_err(&self.path, op))? {
                    let (seq, value) = item.map_err(db_err(&self.path, op))?;
                    let seq = seq.value().to_string();
                    entries.push(decode(&self.path, "history", &seq, value.value())?);
                }
            }
            Ok(entries)
        })?;
        Ok(entries.unwrap_or_default())
    }

    /// Runs `f` in one write transaction, committed atomically, and bumps the
    /// serial. If `f` fails, nothing it did is written.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.create_file()?;
        let session = self.session()?;
        let db = session.create()?;
        let txn = begin_write(&db, &self.path)?;
        schema::prepare_write(&txn, &self.path)?;
        // On any early return `txn` is dropped uncommitted, which redb treats as an abort.
        let value = f(&mut Txn {
            txn: &txn,
            path: &self.path,
        })?;
        bump_serial(&txn, &self.path)?;
        txn.commit()
            .map_err(db_err(&self.path, "commit the write transaction"))?;
        Ok(value)
    }

    /// The key for secret digests cached in this file, created on first use.
    /// Creating it does not bump the serial: no snapshot record changes. The
    /// scope's own key lives in the runtime (see `Runtime::digest_key`); this
    /// copy seeds it and serves `plan --refresh=false`.
    pub fn digest_key(&self) -> Result<[u8; 32], StateError> {
        self.meta_or_insert(
            DIGEST_KEY,
            decode_digest_key,
            |path| {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| StateError::Random {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
                Ok((key, key.to_vec()))
            },
            "store the secret-digest key",
        )
    }

    /// The cached key for secret digests, if there is one; creates nothing.
    pub fn cached_digest_key(&self) -> Result<Option<[u8; 32]>, StateError> {
        Ok(self
            .read(|txn| match open_read(txn, META, &self.path)? {
                Some(meta) => meta_bytes(&meta, &self.path, DIGEST_KEY)?
                    .map(|b| decode_digest_key(&self.path, b))
                    .transpose(),
                None => Ok(None),
            })?
            .flatten())
    }

    /// Replaces the cached key for secret digests with the scope's.
    pub fn set_digest_key(&self, key: &[u8; 32]) -> Result<(), StateError> {
        if self.digest_key()? == *key {
            return Ok(());
        }
        self.write_meta(DIGEST_KEY, key, "store the secret-digest key")
    }

    /// The fleet this file caches, once an applier has recorded it.
    pub fn fleet(&self) -> Result<Option<FleetId>, StateError> {
        Ok(self
            .read(|txn| match open_read(txn, META, &self.path)? {
                Some(meta) => meta_bytes(&meta, &self.path, FLEET)?
                    .map(|b| decode_fleet(&self.path, b))
                    .transpose(),
                None => Ok(None),
            })?
            .flatten())
    }

    /// Refuses a fleet other than the one recorded; see [`FleetId::is`].
    pub fn check_fleet(&self, fleet: &FleetId) -> Result<(), StateError> {
        match self.fleet()? {
            Some(recorded) if !recorded.is(fleet) => Err(StateError::OtherFleet {
                path: self.path.clone(),
                recorded: Box::new(recorded),
                given: Box::new(fleet.clone()),
            }),
            _ => Ok(()),
        }
    }

    /// As [`check_fleet`](Self::check_fleet), and records `fleet` in a file
    /// that has none yet: appliers call it, so a file belongs to the first
    /// fleet anything was applied to. `fleet` must be complete (a namespace
    /// on Kubernetes).
    pub fn claim_fleet(&self, fleet: &FleetId) -> Result<(), StateError> {
        let recorded = self.meta_or_insert(
            FLEET,
            decode_fleet,
            |path| {
                let json = serde_json::to_vec(fleet).map_err(|e| StateError::Encode {
                    path: path.to_path_buf(),
                    what: "the fleet".into(),
                    detail: e.to_string(),
                })?;
                Ok((fleet.clone(), json))
            },
            "record the fleet",
        )?;
        if recorded.is(fleet) {
            Ok(())
        } else {
            Err(StateError::OtherFleet {
                path: self.path.clone(),
                recorded: Box::new(recorded),
                given: Box::new(fleet.clone()),
            })
        }
    }

    /// The value `read` finds in meta, or else the one `make` gives, stored
    /// under its key. Reads first (a read open costs far less than a write
    /// open), and reads again in the write, where another process may have
    /// stored one since. Does not bump the serial.
    fn meta_or_insert<T>(
        &self,
        key: &'static str,
        decode: impl Fn(&Path, Vec<u8>) -> Result<T, StateError>,
        make: impl FnOnce(&Path) -> Result<(T, Vec<u8>), StateError>,
        action: &str,
    ) -> Result<T, StateError> {
        let found = self.read(|txn| match open_read(txn, META, &self.path)? {
            Some(meta) => meta_bytes(&meta, &self.path, key)?
                .map(|b| decode(&self.path, b))
                .transpose(),
            None => Ok(None),
        })?;
        if let Some(Some(value)) = found {
            return Ok(value);
        }
        self.create_file()?;
        let session = self.session()?;
        let db = session.create()?;
        let txn = begin_write(&db, &self.path)?;
        schema::prepare_write(&txn, &self.path)?;
        let value = {
            let mut meta = txn
                .open_table(META)
                .map_err(db_err(&self.path, "open the meta table"))?;
            match meta_bytes(&meta, &self.path, key)? {
                Some(b) => decode(&self.path, b)?,
                None => {
                    let (value, bytes) = make(&self.path)?;
                    meta.insert(key, bytes.as_slice())
                        .map_err(db_err(&self.path, action))?;
                    value
                }
            }
        };
        txn.commit()
            .map_err(db_err(&self.path, &format!("commit: {action}")))?;
        Ok(value)
    }

    /// Writes one meta value, without bumping the serial.
    fn write_meta(&self, key: &str, value: &[u8], action: &str) -> Result<(), StateError> {
        self.create_file()?;
        let session = self.session()?;
        let db = session.create()?;
        let txn = begin_write(&db, &self.path)?;
        schema::prepare_write(&txn, &self.path)?;
        txn.open_table(META)
            .map_err(db_err(&self.path, "open the meta table"))?
            .insert(key, value)
            .map_err(db_err(&self.path, action))?;
        txn.commit()
            .map_err(db_err(&self.path, &format!("commit: {action}")))?;
        Ok(())
    }

    /// Takes the applier lock, or fails at once naming the holder.
    ///
    /// `command` describes the holder to whoever is refused, e.g. `mcpctl watch`.
    /// The lock lives as long as the returned [`ApplyLock`] and, at the
    /// latest, as long as this process.
    pub fn lock_applier(&self, command: &str) -> Result<ApplyLock, StateError> {
        lock::acquire(&self.path, command)
    }

    /// Runs `f` in one read transaction, after refusing a newer schema and
    /// migrating an older one. `None` when there is no file to read.
    fn read<T>(
        &self,
        f: impl Fn(&ReadTransaction) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(cause) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    action: "read its metadata",
                    cause,
                });
            }
            // A writer has created the file but not yet initialised it, and
            // redb would call an empty file "not a database".
            Ok(m) if m.len() == 0 => return Ok(None),
            Ok(_) => {}
        }
        let session = self.session()?;
        // A read-only open writes nothing and takes well under a
        // millisecond; a read-write open and its close sync the file
        // several times, which costs milliseconds. It also lets a user who
        // may only read the file read it.
        match session.open(|| Builder::new().open_read_only(&self.path))? {
            Ok(db) => {
                let txn = begin_read(&db, &self.path)?;
                if !self.needs_migration(&txn)? {
                    return f(&txn).map(Some);
                }
            }
            // The last writer died mid-transaction; only a read-write open repairs the file.
            Err(DatabaseError::RepairAborted) => {}
            Err(e) => return Err(db_err(&self.path, "open")(e)),
        }
        let db = session
            .open(|| Builder::new().open(&self.path))?
            .map_err(db_err(&self.path, "open"))?;
        let mut txn = begin_read(&db, &self.path)?;
        if self.needs_migration(&txn)? {
            drop(txn);
            let w = begin_write(&db, &self.path)?;
            schema::prepare_write(&w, &self.path)?;
            w.commit()
                .map_err(db_err(&self.path, "commit the schema migration"))?;
            txn = begin_read(&db, &self.path)?;
        }
        f(&txn).map(Some)
    }

    /// Whether the file is older than this binary; an error if it is newer.
    fn needs_migration(&self, txn: &ReadTransaction) -> Result<bool, StateError> {
        let version = match open_read(txn, META, &self.path)? {
            Some(meta) => schema::read_version(&meta, &self.path)?,
            None => None,
        };
        // Unversioned means nothing was ever committed: there is nothing to migrate.
        Ok(matches!(
            schema::classify(&self.path, version, schema::CURRENT)?,
            schema::Found::Older(_)
        ))
    }

    fn create_file(&self) -> Result<(), StateError> {
        create_parent(&self.path)?;
        create_private_file(&self.path)
    }

    /// Waits for this thread's turn on the file among the process's threads.
    fn session(&self) -> Result<Session<'_>, StateError> {
        let deadline = Instant::now() + self.busy_timeout;
        let turn = turn::wait(&self.path, deadline).ok_or_else(|| self.busy())?;
        Ok(Session {
            store: self,
            deadline,
            _turn: turn,
        })
    }

    fn busy(&self) -> StateError {
        StateError::Busy {
            path: self.path.clone(),
            waited: self.busy_timeout,
        }
    }
}

impl Session<'_> {
    fn create(&self) -> Result<Database, StateError> {
        let path = &self.store.path;
        self.open(|| Builder::new().create(path))?
            .map_err(db_err(path, "open"))
    }

    /// Runs `open`, retrying while another process holds the file. The outer
    /// error is [`StateError::Busy`]; the inner one is any other failure, left
    /// to the caller because some are expected (a file that needs repair).
    fn open<D>(
        &self,
        open: impl Fn() -> Result<D, DatabaseError>,
    ) -> Result<Result<D, DatabaseError>, StateError> {
        let mut pause = FIRST_PAUSE;
        loop {
            match open() {
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    #[cfg(test)]
                    if let Some(hook) = &self.store.on_busy {
                        hook();
                    }
                    let now = Instant::now();
                    if now >= self.deadline {
                        return Err(self.store.busy());
                    }
                    // Sleeping is the mechanism here: redb offers no way to
                    // wait for another process's lock.
                    std::thread::sleep(pause.min(self.deadline - now));
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                result => return Ok(result),
            }
        }
    }
}

fn begin_read(db: &impl ReadableDatabase, path: &Path) -> Result<ReadTransaction, StateError> {
    db.begin_read()
        .map_err(db_err(path, "begin a read transaction"))
}

fn begin_write(db: &Database, path: &Path) -> Result<WriteTransaction, StateError> {
    db.begin_write()
        .map_err(db_err(path, "begin a write transaction"))
}

impl<'a> Txn<'a> {
    /// The state file, for callers building their own [`StateError::Other`].
    pub fn path(&self) -> &Path {
        self.path
    }

    pub fn put_instance(&mut self, i: &Instance) -> Result<(), StateError> {
        self.put_json(INSTANCES, &i.id.0, i)
    }
    pub fn remove_instance(&mut self, id: &InstanceId) -> Result<(), StateError> {
        self.remove(INSTANCES, &id.0)
    }
    pub fn put_server(&mut self, name: &str, spec: &AppliedSpec) -> Result<(), StateError> {
        self.put_json(SERVERS, name, spec)
    }
    pub fn remove_server(&mut self, name: &str) -> Result<(), StateError> {
        self.remove(SERVERS, name)
    }
    pub fn put_intent(&mut self, i: &Intent) -> Result<(), StateError> {
        self.put_json(INTENTS, &i.instance.0, i)
    }
    pub fn clear_intent(&mut self, id: &InstanceId) -> Result<(), StateError> {
        self.remove(INTENTS, &id.0)
    }
    pub fn put_backoff(&mut self, server: &str, b: &Backoff) -> Result<(), StateError> {
        self.put_json(BACKOFF, server, b)
    }
    pub fn clear_backoff(&mut self, server: &str) -> Result<(), StateError> {
        self.remove(BACKOFF, server)
    }
    pub fn suspend(&mut self, server: &str, s: &Suspension) -> Result<(), StateError> {
        self.put_json(SUSPENDED, server, s)
    }
    pub fn resume(&mut self, server: &str) -> Result<(), StateError> {
        self.remove(SUSPENDED, server)
    }
    pub fn set_revision(&mut self, revision: &str) -> Result<(), StateError> {
        let mut meta = self.open(META)?;
        meta.insert(REVISION, revision.as_bytes())
            .map_err(db_err(self.path, "write the revision"))?;
        Ok(())
    }
    /// Appends `e` to the history, numbered one past the last entry, and
    /// drops the oldest beyond [`HISTORY_KEPT`].
    pub fn push_history(&mut self, e: &HistoryEntry) -> Result<(), StateError> {
        let bytes = encode(self.path, "a history entry", e)?;
        let mut table = self.open(HISTORY)?;
        let last = table
            .last()
            .map_err(db_err(self.path, "read the history"))?
            .map(|(seq, _)| seq.value());
        let seq = last.map_or(1, |s| s.saturating_add(1));
        table
            .insert(seq, bytes.as_slice())
            .map_err(db_err(self.path, "append to the history"))?;
        // Numbers are consecutive, so the count is `seq - first + 1`.
        loop {
            let first = table
                .first()
                .map_err(db_err(self.path, "read the history"))?
                .map(|(k, _)| k.value());
            let Some(first) = first.filter(|f| seq - f >= HISTORY_KEPT) else {
                break;
            };
            table
                .remove(first)
                .map_err(db_err(self.path, "trim the history"))?;
        }
        Ok(())
    }

    fn open<K: redb::Key + 'static>(
        &self,
        def: TableDefinition<K, &'static [u8]>,
    ) -> Result<Table<'a, K, &'static [u8]>, StateError> {
        self.txn
            .open_table(def)
            .map_err(db_err(self.path, &format!("open the {} table", def.name())))
    }

    fn put_json(
        &self,
        def: TableDefinition<&'static str, &'static [u8]>,
        key: &str,
        value: &impl Serialize,
    ) -> Result<(), StateError> {
        let bytes = encode(self.path, &format!("{} entry {key:?}", def.name()), value)?;
        let mut table = self.open(def)?;
        table.insert(key, bytes.as_slice()).map_err(db_err(
            self.path,
            &format!("write {} entry {key:?}", def.name()),
        ))?;
        Ok(())
    }

    /// Removing what is not there is not an error: callers clear state idempotently.
    fn remove(
        &self,
        def: TableDefinition<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<(), StateError> {
        let mut table = self.open(def)?;
        table.remove(key).map_err(db_err(
            self.path,
            &format!("remove {} entry {key:?}", def.name()),
        ))?;
        Ok(())
    }
}

fn encode(path: &Path, what: &str, value: &impl Serialize) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| StateError::Encode {
        path: path.to_path_buf(),
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

fn decode<V: DeserializeOwned>(
    path: &Path,
    table: &str,
    key: &str,
    bytes: &[u8],
) -> Result<V, StateError> {
    serde_json::from_slice(bytes).map_err(|e| decode_err(path, table, key, e))
}

/// Opens a table for reading; a table never written to does not exist yet, and reads as empty.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    path: &Path,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StateError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(db_err(path, &format!("open the {} table", def.name()))(e)),
    }
}

fn read_snapshot(txn: &ReadTransaction, path: &Path) -> Result<Snapshot, StateError> {
    let mut snapshot = Snapshot::default();
    if let Some(meta) = open_read(txn, META, path)? {
        snapshot.serial = meta_u64(&meta, path, SERIAL)?.unwrap_or(0);
        snapshot.revision = meta_bytes(&meta, path, REVISION)?
            .map(|b| String::from_utf8(b).map_err(|e| decode_err(path, "meta", REVISION, e)))
            .transpose()?;
    }
    snapshot.instances = read_map(txn, INSTANCES, path, |k| InstanceId(k.to_owned()))?;
    snapshot.servers = read_map(txn, SERVERS, path, str::to_owned)?;
    snapshot.intents = read_map(txn, INTENTS, path, |k| InstanceId(k.to_owned()))?;
    snapshot.backoff = read_map(txn, BACKOFF, path, str::to_owned)?;
    snapshot.suspended = read_map(txn, SUSPENDED, path, str::to_owned)?;
    Ok(snapshot)
}

fn read_map<K: Ord, V: DeserializeOwned>(
    txn: &ReadTransaction,
    def: TableDefinition<&'static str, &'static [u8]>,
    path: &Path,
    key: impl Fn(&str) -> K,
) -> Result<BTreeMap<K, V>, StateError> {
    let mut map = BTreeMap::new();
    let Some(table) = open_read(txn, def, path)? else {
        return Ok(map);
    };
    let name = def.name();
    let op = format!("read the {name} table");
    for item in table.iter().map_err(db_err(path, &op))? {
        let (k, v) = item.map_err(db_err(path, &op))?;
        let k = k.value();
        map.insert(key(k), decode(path, name, k, v.value())?);
    }
    Ok(map)
}

fn bump_serial(txn: &WriteTransaction, path: &Path) -> Result<(), StateError> {
    let mut meta = txn
        .open_table(META)
        .map_err(db_err(path, "open the meta table"))?;
    let serial = meta_u64(&meta, path, SERIAL)?.unwrap_or(0);
    meta.insert(SERIAL, serial.wrapping_add(1).to_le_bytes().as_slice())
        .map_err(db_err(path, "write the serial"))?;
    Ok(())
}

pub(super) fn meta_bytes(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Option<Vec<u8>>, StateError> {
    let value = meta
        .get(key)
        .map_err(db_err(path, &format!("read meta {key:?}")))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// Reads a fixed-size meta value, refusing one of the wrong length.
fn meta_array<const N: usize>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Option<[u8; N]>, StateError> {
    meta_bytes(meta, path, key)?
        .map(|b| {
            <[u8; N]>::try_from(b.as_slice()).map_err(|_| {
                decode_err(
                    path,
                    "meta",
                    key,
                    format!("expected {N} bytes, found {}", b.len()),
                )
            })
        })
        .transpose()
}

pub(super) fn meta_u32(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Option<u32>, StateError> {
    Ok(meta_array(meta, path, key)?.map(u32::from_le_bytes))
}

fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Option<u64>, StateError> {
    Ok(meta_array(meta, path, key)?.map(u64::from_le_bytes))
}

pub(super) fn put_meta_u32(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    path: &Path,
    key: &str,
    value: u32,
) -> Result<(), StateError> {
    meta.insert(key, value.to_le_bytes().as_slice())
        .map_err(db_err(path, &format!("write meta {key:?}")))?;
    Ok(())
}

fn decode_digest_key(path: &Path, b: Vec<u8>) -> Result<[u8; 32], StateError> {
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
        decode_err(
            path,
            "meta",
            DIGEST_KEY,
            format!("expected 32 bytes, found {}", b.len()),
        )
    })
}

fn decode_fleet(path: &Path, b: Vec<u8>) -> Result<FleetId, StateError> {
    serde_json::from_slice(&b).map_err(|e| decode_err(path, "meta", FLEET, e))
}

/// Creates the state file's missing parent directories, private to the user:
/// the directory lists the lock file, and the state names every server.
pub(super) fn create_parent(path: &Path) -> Result<(), StateError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|cause| StateError::Io {
                path: path.to_path_buf(),
                action: "create its directory",
                cause,
            }),
        _ => Ok(()),
    }
}

/// Creates an empty state file readable by its owner only, before redb
/// initialises it: redb would create it with the umask's mode. An existing
/// file keeps the mode its owner chose.
fn create_private_file(path: &Path) -> Result<(), StateError> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let io = |action, cause| StateError::Io {
        path: path.to_path_buf(),
        action,
        cause,
    };
    match created {
        // The mode passed to open() is masked by the umask; make it exact.
        Ok(file) => file
            .set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| io("restrict its permissions", e)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create it", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("state.redb"));
        (dir, store)
    }

    /// Writes `meta[key] = value` behind the store's back, as another version of mcpctl might.
    fn poke_meta(store: &Store, key: &str, value: &[u8]) {
        let db = Database::create(store.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(key, value).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_file_from_a_newer_mcpctl_is_refused_by_every_call() {
        let (_dir, store) = store();
        store.update(|t| t.set_revision("r1")).unwrap();
        poke_meta(&store, schema::KEY, &7u32.to_le_bytes());

        let expected = format!(
            "state file {} was written by a newer mcpctl (schema 7, this binary knows 1); upgrade mcpctl",
            store.path().display()
        );
        for err in [
            store.load().unwrap_err(),
            store.update(|_| Ok(())).unwrap_err(),
            store.digest_key().unwrap_err(),
            store.history().unwrap_err(),
        ] {
            assert!(matches!(
                err,
                StateError::NewerSchema {
                    found: 7,
                    known: 1,
                    ..
                }
            ));
            assert_eq!(err.to_string(), expected);
        }
    }

    fn fleet(runtime: &str, namespace: Option<&str>, scope: &str) -> FleetId {
        FleetId {
            runtime: runtime.into(),
            namespace: namespace.map(str::to_owned),
            scope: scope.into(),
        }
    }

    #[test]
    fn a_file_belongs_to_the_first_fleet_applied_to_and_refuses_others() {
        let (_dir, store) = store();
        let docker = fleet("docker", None, "default");
        // Nothing recorded yet: any fleet may read it.
        store.check_fleet(&fleet("kubernetes", None, "x")).unwrap();
        assert_eq!(store.fleet().unwrap(), None);
        store.claim_fleet(&docker).unwrap();
        store.claim_fleet(&docker).unwrap();
        store.check_fleet(&docker).unwrap();
        assert_eq!(store.fleet().unwrap(), Some(docker.clone()));
        for other in [
            fleet("kubernetes", Some("default"), "default"),
            fleet("kubernetes", None, "default"),
            fleet("docker", None, "team-a"),
        ] {
            let e = store.check_fleet(&other).unwrap_err();
            assert!(matches!(e, StateError::OtherFleet { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("caches another fleet (docker, scope default)"),
                "{e}"
            );
            let help = miette::Diagnostic::help(&e).map(|h| h.to_string());
            assert!(
                help.as_deref()
                    .is_some_and(|h| h.contains("run with --runtime docker --scope default")),
                "{help:?}"
            );
            assert!(store.claim_fleet(&other).is_err());
        }
        // The refusals wrote nothing.
        assert_eq!(store.fleet().unwrap(), Some(docker));
    }

    #[test]
    fn a_namespace_the_command_does_not_know_matches_but_another_does_not() {
        let (_dir, store) = store();
        store
            .claim_fleet(&fleet("kubernetes", Some("mcp"), "default"))
            .unwrap();
        store
            .check_fleet(&fleet("kubernetes", None, "default"))
            .unwrap();
        assert!(
            store
                .check_fleet(&fleet("kubernetes", Some("other"), "default"))
                .is_err()
        );
    }

    #[test]
    fn the_cached_digest_key_is_replaced_by_the_scopes() {
        let (_dir, store) = store();
        let first = store.digest_key().unwrap();
        assert_eq!(store.digest_key().unwrap(), first);
        store.set_digest_key(&[9; 32]).unwrap();
        assert_eq!(store.digest_key().unwrap(), [9; 32]);
    }

    #[test]
    fn a_new_file_is_stamped_with_the_current_schema() {
        let (_dir, store) = store();
        store.digest_key().unwrap();
        let db = Database::open(store.path()).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            schema::read_version(&meta, store.path()).unwrap(),
            Some(schema::CURRENT)
        );
    }

    #[test]
    fn a_file_held_open_too_long_is_reported_busy() {
        let (_dir, store) = store();
        store.update(|_| Ok(())).unwrap();
        let store = store.with_busy_timeout(Duration::from_millis(30));
        let held = Database::open(store.path()).unwrap();

        let started = Instant::now();
        let err = store.load().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "state file {} is busy: another mcpctl process has held it for over 30 ms",
                store.path().display()
            )
        );
        assert!(matches!(
            store.update(|_| Ok(())),
            Err(StateError::Busy { .. })
        ));

        drop(held);
        assert_eq!(store.load().unwrap().serial, 1);
    }

    #[test]
    fn a_reader_retries_until_another_holder_lets_go() {
        let (_dir, store) = store();
        store.update(|t| t.set_revision("r1")).unwrap();
        // Opened directly, so that this holder is not in the store's queue
        // and behaves like another process.
        let held = Database::open(store.path()).unwrap();

        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = store.clone();
        reader.on_busy = Some(std::sync::Arc::new(move || {
            let _ = tx.send(());
        }));
        let loading = std::thread::spawn(move || reader.load());

        rx.recv().unwrap(); // The reader found the file held at least once.
        drop(held);
        let snapshot = loading.join().unwrap().unwrap();
        assert_eq!(snapshot.revision.as_deref(), Some("r1"));
    }

    #[test]
    fn a_thread_waiting_behind_a_slow_transaction_gives_up_at_the_deadline() {
        let (_dir, store) = store();
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let slow = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.update(|t| {
                    t.set_revision("slow")?;
                    inside_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        inside_rx.recv().unwrap();

        let err = store
            .clone()
            .with_busy_timeout(Duration::from_millis(20))
            .load()
            .unwrap_err();
        assert!(matches!(err, StateError::Busy { .. }), "{err:?}");

        release_tx.send(()).unwrap();
        slow.join().unwrap().unwrap();
        assert_eq!(store.load().unwrap().revision.as_deref(), Some("slow"));
    }

    #[test]
    fn the_default_busy_message_says_ten_seconds() {
        assert_eq!(seconds_or_millis(BUSY_TIMEOUT), "10 s");
        assert_eq!(seconds_or_millis(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn a_malformed_meta_value_is_a_decode_error() {
        let (_dir, store) = store();
        store.update(|_| Ok(())).unwrap();
        poke_meta(&store, SERIAL, &[1, 2, 3]);

        let err = store.load().unwrap_err();
        assert!(
            matches!(&err, StateError::Decode { table, key, .. } if table == "meta" && key == SERIAL),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("expected 8 bytes, found 3"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_record_names_its_table_and_key() {
        let (_dir, store) = store();
        store.update(|_| Ok(())).unwrap();
        let db = Database::create(store.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(SERVERS)
            .unwrap()
            .insert("web", b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);

        let err = store.load().unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "state file {}: cannot read servers entry \"web\": ",
                store.path().display()
            )),
            "{err}"
        );
    }
}
