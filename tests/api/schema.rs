//! The two migration trees must build the same schema: `crmchat migrate` on a fresh SQLite file and on a
//! fresh PostgreSQL database, then both catalogs read back and compared table by table — columns (name,
//! type as integer/text/boolean, nullability, default, generated id), primary key, unique constraints,
//! foreign keys and indexes by name.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, Row};

use crate::helpers::{PgDatabase, run_cli};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    /// `integer`, `text` or `boolean`; anything else is kept as `<backend>:<type>` and fails the comparison.
    ty: String,
    not_null: bool,
    default: Option<String>,
    /// Numbered by the database (SQLite AUTOINCREMENT, PostgreSQL identity).
    generated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    table: String,
    references: Vec<String>,
    on_delete: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    unique: BTreeSet<Vec<String>>,
    foreign_keys: BTreeSet<ForeignKey>,
    /// Created by `CREATE INDEX` (not behind a constraint): name → (columns, unique).
    indexes: BTreeMap<String, (Vec<String>, bool)>,
}

type Schema = BTreeMap<String, Table>;

fn migrate(url: &str) {
    let out = run_cli(&["migrate", "--database", url]);
    assert!(out.status.success(), "crmchat migrate {url}: {}", String::from_utf8_lossy(&out.stderr));
}

fn list(s: &str) -> Vec<String> {
    s.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect()
}

async fn sqlite_schema(url: &str) -> Schema {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_sqlx\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name, _sql) in tables {
        let mut table = Table::default();
        let columns =
            sqlx::query("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        let single_column_key = columns.iter().filter(|c| c.get::<i64, _>("pk") > 0).count() == 1;
        for c in &columns {
            let column: String = c.get("name");
            let declared: String = c.get("type");
            let pk_pos: i64 = c.get("pk");
            if pk_pos > 0 {
                pk.push((pk_pos, column.clone()));
            }
            let ty = match declared.to_ascii_uppercase().as_str() {
                "INTEGER" | "BIGINT" => "integer".to_string(),
                "TEXT" => "text".to_string(),
                "BOOLEAN" => "boolean".to_string(),
                other => format!("sqlite:{other}"),
            };
            table.columns.push(Column {
                // SQLite lets a non-integer primary key hold NULL unless declared NOT NULL; we never store one,
                // and PostgreSQL makes every key column NOT NULL.
                not_null: c.get::<bool, _>("notnull") || pk_pos > 0,
                default: c.get("dflt_value"),
                // A single-column INTEGER PRIMARY KEY is the rowid: numbered by the database, with or without
                // AUTOINCREMENT (a BIGINT key is not).
                generated: pk_pos > 0 && declared.eq_ignore_ascii_case("INTEGER") && single_column_key,
                name: column,
                ty,
            });
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        let indexes: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for (index, unique, origin) in indexes {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&index)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            match origin.as_str() {
                "pk" => {}
                "u" => {
                    table.unique.insert(columns);
                }
                _ => {
                    table.indexes.insert(index, (columns, unique));
                }
            }
        }
        let fks = sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list($1) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for f in &fks {
            let fk = by_id.entry(f.get("id")).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                table: f.get("table"),
                references: Vec::new(),
                on_delete: f.get("on_delete"),
            });
            fk.columns.push(f.get("from"));
            fk.references.push(f.get("to"));
        }
        table.foreign_keys = by_id.into_values().collect();
        schema.insert(name, table);
    }
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_sqlx\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    // The columns of a key, in key order: `conkey`/`confkey`/`indkey` hold attribute numbers.
    let names = |keys: &str, table: &str| {
        format!(
            "COALESCE((SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
             FROM unnest({keys}) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = {table} AND a.attnum = k.attnum), '')"
        )
    };
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let columns = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS ty, is_nullable::text AS nullable, \
             column_default::text AS dflt, is_identity::text AS identity FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for c in &columns {
            let ty: String = c.get("ty");
            table.columns.push(Column {
                name: c.get("name"),
                // Only BIGINT: sqlx decodes INT4 as i32, and the shared row mapping reads i64.
                ty: match ty.as_str() {
                    "bigint" => "integer".to_string(),
                    "text" => "text".to_string(),
                    "boolean" => "boolean".to_string(),
                    other => format!("postgres:{other}"),
                },
                not_null: c.get::<String, _>("nullable") == "NO",
                default: c.get("dflt"),
                generated: c.get::<String, _>("identity") == "YES",
            });
        }
        let constraints = sqlx::query(&format!(
            "SELECT con.contype::text AS kind, {} AS columns, COALESCE(ref.relname::text, '') AS ref_table, \
             {} AS ref_columns, con.confdeltype::text AS on_delete \
             FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid \
             JOIN pg_namespace n ON n.oid = rel.relnamespace LEFT JOIN pg_class ref ON ref.oid = con.confrelid \
             WHERE n.nspname = current_schema() AND rel.relname = $1 AND con.contype IN ('p', 'u', 'f')",
            names("con.conkey", "con.conrelid"),
            names("con.confkey", "con.confrelid"),
        ))
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for c in &constraints {
            let columns = list(c.get("columns"));
            match c.get::<String, _>("kind").as_str() {
                "p" => table.primary_key = columns,
                "u" => {
                    table.unique.insert(columns);
                }
                _ => {
                    let on_delete = match c.get::<String, _>("on_delete").as_str() {
                        "a" => "NO ACTION",
                        "r" => "RESTRICT",
                        "c" => "CASCADE",
                        "n" => "SET NULL",
                        "d" => "SET DEFAULT",
                        other => panic!("confdeltype {other:?}"),
                    };
                    table.foreign_keys.insert(ForeignKey {
                        columns,
                        table: c.get("ref_table"),
                        references: list(c.get("ref_columns")),
                        on_delete: on_delete.to_string(),
                    });
                }
            }
        }
        let indexes = sqlx::query(&format!(
            "SELECT i.relname::text AS name, x.indisunique AS is_unique, {} AS columns \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = current_schema() AND t.relname = $1 AND NOT EXISTS \
             (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u', 'x'))",
            names("x.indkey::int2[]", "x.indrelid"),
        ))
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for i in &indexes {
            table.indexes.insert(i.get("name"), (list(i.get("columns")), i.get("is_unique")));
        }
        schema.insert(name, table);
    }
    schema
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_build_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}/schema.db", dir.path().display());
    let pg = PgDatabase::create("crmchat_test");
    migrate(&sqlite_url);
    migrate(&pg.url);
    let (sqlite, postgres) = (sqlite_schema(&sqlite_url).await, postgres_schema(&pg.url).await);

    assert!(sqlite.contains_key("chat_members") && sqlite.contains_key("webhooks"), "read the schema: {sqlite:?}");
    assert_eq!(sqlite.keys().collect::<Vec<_>>(), postgres.keys().collect::<Vec<_>>(), "the same tables");
    for (name, table) in &sqlite {
        let other = &postgres[name];
        assert_eq!(table.columns, other.columns, "columns of {name} (left: SQLite, right: PostgreSQL)");
        assert_eq!(table.primary_key, other.primary_key, "primary key of {name}");
        assert_eq!(table.unique, other.unique, "unique constraints of {name}");
        assert_eq!(table.foreign_keys, other.foreign_keys, "foreign keys of {name}");
        assert_eq!(table.indexes, other.indexes, "indexes of {name}");
    }
    // The comparison sees what it should: the generated ids and an explicit index.
    let generated: Vec<&str> =
        sqlite.iter().filter(|(_, t)| t.columns.iter().any(|c| c.generated)).map(|(name, _)| name.as_str()).collect();
    let expected =
        ["deliveries", "event_bindings", "notifications", "offline_events", "outbox", "outgoing_webhooks", "webhooks"];
    assert_eq!(generated, expected);
    assert!(postgres["messages"].indexes.contains_key("messages_by_chat"));
}
