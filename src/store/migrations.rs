//! The schema migrations of both backends, embedded in the binary.
//!
//! sqlx's `migrate!` macro would find them itself, but it is the only macro crmchat used from sqlx, and the
//! `macros` feature builds sqlx a second time for the compiler (its drivers, and SQLite's C source, included).
//! The migrator below is built from the same files with sqlx's public API, so its checksums are the ones the
//! macro wrote into existing databases. A test keeps each list equal to its directory.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// One migration file: its name without `.sql` (`0001_init`), and its text.
pub type File = (&'static str, &'static str);

/// `migrations/sqlite`, in order.
pub const SQLITE: &[File] = &[
    ("0001_init", include_str!("../../migrations/sqlite/0001_init.sql")),
    ("0002_events", include_str!("../../migrations/sqlite/0002_events.sql")),
    ("0004_offline_events", include_str!("../../migrations/sqlite/0004_offline_events.sql")),
    ("0005_event_settings", include_str!("../../migrations/sqlite/0005_event_settings.sql")),
    ("0006_delivery_log", include_str!("../../migrations/sqlite/0006_delivery_log.sql")),
    ("0007_outgoing_webhooks", include_str!("../../migrations/sqlite/0007_outgoing_webhooks.sql")),
];

/// `migrations/postgres`, in order.
pub const POSTGRES: &[File] = &[
    ("0001_init", include_str!("../../migrations/postgres/0001_init.sql")),
    ("0002_events", include_str!("../../migrations/postgres/0002_events.sql")),
    ("0004_offline_events", include_str!("../../migrations/postgres/0004_offline_events.sql")),
    ("0005_event_settings", include_str!("../../migrations/postgres/0005_event_settings.sql")),
    ("0006_delivery_log", include_str!("../../migrations/postgres/0006_delivery_log.sql")),
    ("0007_outgoing_webhooks", include_str!("../../migrations/postgres/0007_outgoing_webhooks.sql")),
    ("0008_message_ids", include_str!("../../migrations/postgres/0008_message_ids.sql")),
];

/// The migrator of one backend's files.
pub async fn migrator(files: &'static [File]) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(&'static [File]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { self.0.iter().map(|&(name, sql)| migration(name, sql)).collect() })
    }
}

/// A file as sqlx reads one from a directory: `<version>_<description>.sql`, underscores of the description
/// read as spaces, and `-- no-transaction` on its first line to run outside a transaction.
fn migration(name: &str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let (version, description) = name.split_once('_').ok_or_else(|| format!("migration {name}: no version"))?;
    let version: i64 = version.parse().map_err(|e| format!("migration {name}: version: {e}"))?;
    let no_tx = sql.starts_with("-- no-transaction");
    Ok(Migration::new(
        version,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        no_tx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each list holds exactly the files of its directory, with their text.
    #[test]
    fn the_lists_are_the_directories() {
        for (backend, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
            let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "sql"))
                .map(|path| {
                    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(&path).unwrap())
                })
                .collect();
            on_disk.sort();
            let listed: Vec<(String, String)> = list.iter().map(|&(n, s)| (n.to_string(), s.to_string())).collect();
            let names = |files: &[(String, String)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
            assert_eq!(names(&listed), names(&on_disk), "src/store/migrations.rs must list migrations/{backend}");
            assert!(listed == on_disk, "migrations/{backend}: the embedded text differs from the files");
        }
    }

    /// The checksum sqlx stores for a migration is the SHA-384 of its text, as the `migrate!` macro made it.
    #[tokio::test]
    async fn versions_and_checksums_are_sqlxs() {
        use sha2::Digest as _;
        let migrator = migrator(SQLITE).await.unwrap();
        let first = migrator.iter().next().unwrap();
        assert_eq!((first.version, first.description.as_ref()), (1, "init"));
        assert_eq!(first.checksum.as_ref(), sha2::Sha384::digest(SQLITE[0].1.as_bytes()).as_slice());
        assert!(migrator.iter().map(|m| m.version).collect::<Vec<_>>().is_sorted());
    }
}
