//! Offline events as the store keeps them: the typed query of `event.offline.get`/`.list` and the SQL it
//! becomes. The methods parse the vendor's `filter`/`order` into these types once, at the edge.

/// Where an offline event comes from: the application and `auth_connector` of the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub client_id: String,
    pub connector_id: String,
}

/// Whose queue a call reads: the application and the call's `auth_connector` (empty when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub client_id: String,
    pub connector_id: String,
}

/// A column a filter or an order may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    TimestampX,
    EventName,
    MessageId,
    ProcessId,
    Error,
}

impl Field {
    /// The vendor's name of the field.
    pub fn name(self) -> &'static str {
        match self {
            Field::Id => "ID",
            Field::TimestampX => "TIMESTAMP_X",
            Field::EventName => "EVENT_NAME",
            Field::MessageId => "MESSAGE_ID",
            Field::ProcessId => "PROCESS_ID",
            Field::Error => "ERROR",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        [Field::Id, Field::TimestampX, Field::EventName, Field::MessageId, Field::ProcessId, Field::Error]
            .into_iter()
            .find(|f| f.name() == name)
    }

    /// Text fields take text values; the others integers (`TIMESTAMP_X` in milliseconds).
    pub fn is_text(self) -> bool {
        matches!(self, Field::EventName | Field::MessageId | Field::ProcessId)
    }

    fn column(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::TimestampX => "created_ms",
            Field::EventName => "event",
            Field::MessageId => "message_id",
            Field::ProcessId => "process_id",
            Field::Error => "error",
        }
    }
}

/// A filter's comparison (the vendor's key prefixes `=`/none, `>`, `<`, `>=`, `<=`, `%`, `@`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gt,
    Lt,
    Ge,
    Le,
    /// `%`: the value occurs in the field.
    Contains,
    /// `@`: the field is one of the values.
    In,
}

/// A filter value, typed by its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    pub values: Vec<Value>,
}

/// What to read: the caller's conditions, the order (the row id breaks ties), and which rows of the queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub conditions: Vec<Condition>,
    pub order: Vec<(Field, bool)>,
    /// Only rows of this batch (`""`: only free rows); `None`: any.
    pub process_id: Option<String>,
    /// Only rows with this `ERROR`; `None`: any.
    pub error: Option<i64>,
}

/// Which rows of a batch `event.offline.clear` deletes.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
    MessageIds(Vec<String>),
}

/// One offline event as `event.offline.get` and `.list` answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineEvent {
    pub id: i64,
    pub created_ms: i64,
    pub event: String,
    pub payload: String,
    pub user_id: i64,
    pub message_id: String,
    pub process_id: String,
    pub error: i64,
}

/// The selected columns of an [`OfflineEvent`], in its field order.
pub(crate) const COLUMNS: &str = "id, created_ms, event, payload, user_id, message_id, process_id, error";

/// SQL built for a query: the `WHERE` clause (starting with the owner, `$1` and `$2`) and its parameters after
/// those two, in the order they appear (SQLite numbers parameters by first appearance).
pub(crate) struct Built {
    pub where_sql: String,
    pub order_sql: String,
    pub params: Vec<Value>,
}

pub(crate) fn build(query: &Query) -> Built {
    let mut where_sql = String::from("client_id = $1 AND connector_id = $2");
    let mut params = Vec::new();
    let next = |params: &mut Vec<Value>, value: Value| {
        params.push(value);
        format!("${}", params.len() + 2)
    };
    if let Some(process_id) = &query.process_id {
        let p = next(&mut params, Value::Text(process_id.clone()));
        where_sql.push_str(&format!(" AND process_id = {p}"));
    }
    if let Some(error) = query.error {
        let p = next(&mut params, Value::Int(error));
        where_sql.push_str(&format!(" AND error = {p}"));
    }
    for c in &query.conditions {
        let column = c.field.column();
        match c.op {
            Op::In => {
                if c.values.is_empty() {
                    where_sql.push_str(" AND 1 = 0");
                    continue;
                }
                let list: Vec<String> = c.values.iter().map(|v| next(&mut params, v.clone())).collect();
                where_sql.push_str(&format!(" AND {column} IN ({})", list.join(", ")));
            }
            Op::Contains if c.field.is_text() => {
                let Some(value) = c.values.first() else { continue };
                let p = next(&mut params, value.clone());
                // The vendor's `%` is a LIKE of the value between wildcards (its own wildcards count too).
                where_sql.push_str(&format!(" AND {column} LIKE '%' || {p} || '%'"));
            }
            op => {
                let Some(value) = c.values.first() else { continue };
                let p = next(&mut params, value.clone());
                let sign = match op {
                    Op::Gt => ">",
                    Op::Lt => "<",
                    Op::Ge => ">=",
                    Op::Le => "<=",
                    _ => "=",
                };
                where_sql.push_str(&format!(" AND {column} {sign} {p}"));
            }
        }
    }
    let mut order: Vec<String> =
        query.order.iter().map(|(f, desc)| format!("{} {}", f.column(), if *desc { "DESC" } else { "ASC" })).collect();
    order.push("id ASC".into());
    Built { where_sql, order_sql: order.join(", "), params }
}

/// The vendor's MESSAGE_ID of an event: md5 of `EVENT_NAME|` and the event's data as JSON (as stored: compact,
/// so the same data always gives the same id). Lower-case hex, 32 characters.
pub fn message_id(event: &str, payload: &str) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    hasher.update(event.as_bytes());
    hasher.update(b"|");
    hasher.update(payload.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_md5_of_name_bar_json() {
        // md5("A|{}"), computed independently with `printf 'A|{}' | md5sum`.
        assert_eq!(message_id("A", "{}"), "d73c58e4bfdef2ab1cd5391ec750c94a");
    }

    #[test]
    fn placeholders_follow_the_owner_in_order() {
        let query = Query {
            conditions: vec![
                Condition { field: Field::Id, op: Op::Gt, values: vec![Value::Int(3)] },
                Condition {
                    field: Field::EventName,
                    op: Op::In,
                    values: vec![Value::Text("A".into()), Value::Text("B".into())],
                },
            ],
            order: vec![(Field::TimestampX, true)],
            process_id: Some(String::new()),
            error: Some(0),
        };
        let built = build(&query);
        assert_eq!(
            built.where_sql,
            "client_id = $1 AND connector_id = $2 AND process_id = $3 AND error = $4 AND id > $5 AND event IN ($6, $7)"
        );
        assert_eq!(built.order_sql, "created_ms DESC, id ASC");
        assert_eq!(built.params.len(), 5);
    }
}
