//! The state file's format version and the migrations between versions.
//!
//! `meta.schema_version` says which layout of tables and values a file
//! holds. Every write transaction makes sure it is current before it writes
//! anything else, so a file is never half old, half new: migrations run in
//! the same transaction as the write that needed them, and a failed
//! migration leaves the file as it was.

use super::{META, StateError, db_err, meta_u32, put_meta_u32};
use redb::{ReadableTable, WriteTransaction};
use std::path::Path;

/// The format this binary reads and writes.
pub(super) const CURRENT: u32 = 1;

/// The oldest format a migration chain starts from.
pub(super) const FIRST: u32 = 1;

/// Moves a file from one schema version to the next, inside the caller's
/// write transaction. Errors are boxed because a migration may fail in redb,
/// in serde, or in its own checks, and all of them end the same way.
pub(super) type Migration =
    fn(&WriteTransaction) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// `MIGRATIONS[i]` takes a file from version `FIRST + i` to `FIRST + i + 1`.
/// Append one whenever [`CURRENT`] goes up.
pub(super) const MIGRATIONS: &[Migration] = &[];

// Checked by the compiler, not by a test: a forgotten migration would
// otherwise surface only when a user upgrades.
const _: () = assert!(MIGRATIONS.len() as u32 == CURRENT - FIRST);

/// The schema key in `meta`.
pub(super) const KEY: &str = "schema_version";

/// What an open found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No version yet: the file was just created and nothing was committed.
    Unversioned,
    Current,
    Older(u32),
}

/// Classifies `found` against `current`, refusing files from a newer mcpctl.
pub(super) fn classify(path: &Path, found: Option<u32>, current: u32) -> Result<Found, StateError> {
    match found {
        None => Ok(Found::Unversioned),
        Some(v) if v == current => Ok(Found::Current),
        Some(v) if v > current => Err(StateError::NewerSchema {
            path: path.to_path_buf(),
            found: v,
            known: current,
        }),
        Some(v) => Ok(Found::Older(v)),
    }
}

/// Makes the file current inside `txn`: stamps a new file, migrates an old one.
pub(super) fn prepare_write(txn: &WriteTransaction, path: &Path) -> Result<(), StateError> {
    prepare_write_with(txn, path, CURRENT, MIGRATIONS)
}

/// [`prepare_write`] with the version table as a parameter, so tests can
/// exercise the migration chain before the real one has any entries.
pub(super) fn prepare_write_with(
    txn: &WriteTransaction,
    path: &Path,
    current: u32,
    migrations: &[Migration],
) -> Result<(), StateError> {
    let found = {
        let meta = txn
            .open_table(META)
            .map_err(db_err(path, "open the meta table"))?;
        meta_u32(&meta, path, KEY)?
    };
    match classify(path, found, current)? {
        Found::Current => Ok(()),
        Found::Unversioned => put_version(txn, path, current),
        Found::Older(from) => {
            for version in from..current {
                let migrate = version
                    .checked_sub(FIRST)
                    .and_then(|i| migrations.get(i as usize))
                    .ok_or_else(|| StateError::Migration {
                        path: path.to_path_buf(),
                        from: version,
                        cause: format!("this mcpctl has no migration from schema {version}"),
                    })?;
                migrate(txn).map_err(|e| StateError::Migration {
                    path: path.to_path_buf(),
                    from: version,
                    cause: e.to_string(),
                })?;
            }
            put_version(txn, path, current)
        }
    }
}

fn put_version(txn: &WriteTransaction, path: &Path, version: u32) -> Result<(), StateError> {
    let mut meta = txn
        .open_table(META)
        .map_err(db_err(path, "open the meta table"))?;
    put_meta_u32(&mut meta, path, KEY, version)
}

/// Reads the version with any readable meta table (read or write transaction).
pub(super) fn read_version(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Option<u32>, StateError> {
    meta_u32(meta, path, KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::Database;

    const STEPS: redb::TableDefinition<u32, u32> = redb::TableDefinition::new("steps");

    // Each fake migration records that it ran, so the test can check order.
    fn step(
        txn: &WriteTransaction,
        n: u32,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut t = txn.open_table(STEPS)?;
        let next = redb::ReadableTableMetadata::len(&t)? as u32;
        t.insert(next, n)?;
        Ok(())
    }
    fn one_to_two(txn: &WriteTransaction) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        step(txn, 1)
    }
    fn two_to_three(
        txn: &WriteTransaction,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        step(txn, 2)
    }
    fn broken(_: &WriteTransaction) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err("column missing".into())
    }

    fn db_at(version: Option<u32>) -> (tempfile::TempDir, std::path::PathBuf, Database) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            if let Some(v) = version {
                put_meta_u32(&mut meta, &path, KEY, v).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, path, db)
    }

    fn version_and_steps(db: &Database, path: &Path) -> (Option<u32>, Vec<u32>) {
        use redb::ReadableDatabase;
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = read_version(&meta, path).unwrap();
        let steps = match txn.open_table(STEPS) {
            Ok(t) => t.iter().unwrap().map(|r| r.unwrap().1.value()).collect(),
            Err(_) => Vec::new(),
        };
        (v, steps)
    }

    #[test]
    fn migrations_run_in_order_from_the_found_version() {
        let (_dir, path, db) = db_at(Some(1));
        let txn = db.begin_write().unwrap();
        prepare_write_with(&txn, &path, 3, &[one_to_two, two_to_three]).unwrap();
        txn.commit().unwrap();
        assert_eq!(version_and_steps(&db, &path), (Some(3), vec![1, 2]));

        let (_dir, path, db) = db_at(Some(2));
        let txn = db.begin_write().unwrap();
        prepare_write_with(&txn, &path, 3, &[one_to_two, two_to_three]).unwrap();
        txn.commit().unwrap();
        assert_eq!(version_and_steps(&db, &path), (Some(3), vec![2]));
    }

    #[test]
    fn a_new_file_is_stamped_without_migrating() {
        let (_dir, path, db) = db_at(None);
        let txn = db.begin_write().unwrap();
        prepare_write_with(&txn, &path, 3, &[one_to_two, two_to_three]).unwrap();
        txn.commit().unwrap();
        assert_eq!(version_and_steps(&db, &path), (Some(3), vec![]));
    }

    #[test]
    fn a_failed_migration_leaves_the_file_unchanged() {
        let (_dir, path, db) = db_at(Some(1));
        let txn = db.begin_write().unwrap();
        let err = prepare_write_with(&txn, &path, 3, &[one_to_two, broken]).unwrap_err();
        drop(txn);
        assert!(
            matches!(err, StateError::Migration { from: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("column missing"), "{err}");
        assert_eq!(version_and_steps(&db, &path), (Some(1), vec![]));
    }

    #[test]
    fn a_version_without_a_migration_is_refused() {
        let (_dir, path, db) = db_at(Some(0));
        let txn = db.begin_write().unwrap();
        let err = prepare_write_with(&txn, &path, 2, &[one_to_two]).unwrap_err();
        assert!(
            matches!(err, StateError::Migration { from: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_newer_version_is_refused_with_upgrade_advice() {
        let (_dir, path, db) = db_at(Some(7));
        let txn = db.begin_write().unwrap();
        let err = prepare_write_with(&txn, &path, 1, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "was written by a newer mcpctl (schema 7, this binary knows 1); upgrade mcpctl"
            ),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}
