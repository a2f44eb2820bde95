//! The portal model and the rules of the spec tables that do not depend on HTTP or SQL: who may read a CRM
//! record, who may manage an open line's chats, which chats belong to a record, who inherits authorship.

pub mod rules;

use std::fmt;

/// The four CRM record types the Open Channel methods accept, with the reference's owner type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrmEntityType {
    Lead,
    Deal,
    Contact,
    Company,
}

impl CrmEntityType {
    pub const ALL: [CrmEntityType; 4] = [Self::Lead, Self::Deal, Self::Contact, Self::Company];

    /// Case-insensitive, as the reference upper-cases the value before matching it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Deal => "deal",
            Self::Contact => "contact",
            Self::Company => "company",
        }
    }

    /// The reference's upper-case spelling, used in event payloads (`DEAL`).
    pub fn as_upper(self) -> &'static str {
        match self {
            Self::Lead => "LEAD",
            Self::Deal => "DEAL",
            Self::Contact => "CONTACT",
            Self::Company => "COMPANY",
        }
    }

    pub fn owner_type_id(self) -> i64 {
        match self {
            Self::Lead => 1,
            Self::Deal => 2,
            Self::Contact => 3,
            Self::Company => 4,
        }
    }

    pub fn index(self) -> usize {
        self.owner_type_id() as usize - 1
    }
}

impl fmt::Display for CrmEntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's CRM read permission for one record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLevel {
    All,
    /// Only records where the user is responsible or an observer.
    Own,
    None,
}

impl ReadLevel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "own" => Some(Self::Own),
            "none" => Some(Self::None),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Own => "own",
            Self::None => "none",
        }
    }
}

/// A user's open-line permission (`join` or `history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLevel {
    All,
    /// Allowed on lines whose operator queue contains the user.
    OwnLines,
    None,
}

impl LineLevel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "self" => Some(Self::OwnLines),
            "none" => Some(Self::None),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::OwnLines => "self",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    Employee,
    Bot,
    Extranet,
    Connector,
}

impl UserKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "employee" => Some(Self::Employee),
            "bot" => Some(Self::Bot),
            "extranet" => Some(Self::Extranet),
            "connector" => Some(Self::Connector),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Employee => "employee",
            Self::Bot => "bot",
            Self::Extranet => "extranet",
            Self::Connector => "connector",
        }
    }
}

/// A user's id (an employee, a bot, an extranet or connector user), as a method names it: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

/// A chat's id, as a method names it: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatId(pub i64);

/// A CRM record named by its type and id; it may not exist (a method then judges the caller by the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef {
    pub entity_type: CrmEntityType,
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub last_name: String,
    pub active: bool,
    pub kind: UserKind,
    pub admin: bool,
    /// Indexed by `CrmEntityType::index()`.
    pub crm_read: [ReadLevel; 4],
    pub line_join: LineLevel,
    pub line_history: LineLevel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CrmRecord {
    pub entity_type: CrmEntityType,
    pub id: i64,
    pub responsible: i64,
    pub observers: Vec<i64>,
}

impl CrmRecord {
    pub fn reference(&self) -> RecordRef {
        RecordRef { entity_type: self.entity_type, id: self.id }
    }

    /// A record the portal does not hold: nobody is responsible for it and nobody observes it.
    pub fn unknown(reference: RecordRef) -> Self {
        Self { entity_type: reference.entity_type, id: reference.id, responsible: 0, observers: Vec::new() }
    }
}

/// Open-line session status codes of the reference (`Bitrix\ImOpenLines\Session::STATUS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus(pub i64);

impl SessionStatus {
    pub const NAMES: [(&'static str, i64); 11] = [
        ("new", 0),
        ("skip", 5),
        ("answer", 10),
        ("client", 20),
        ("client_after_operator", 25),
        ("operator", 40),
        ("wait_client", 50),
        ("close", 60),
        ("spam", 65),
        ("duplicate", 69),
        ("silently_close", 75),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|&(_, c)| Self(c))
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::NAMES.iter().find(|(_, c)| *c == code).map(|&(_, c)| Self(c))
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, c)| *c == self.0).map(|(n, _)| *n).unwrap_or("new")
    }

    /// Statuses from "answer" (10) up to, not including, "wait_client" (50) are a live conversation.
    pub fn is_active(self) -> bool {
        (10..50).contains(&self.0)
    }
}

/// One session bound to a CRM record, as the chat-resolution rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionLink {
    pub session_id: i64,
    pub chat_id: i64,
    pub status: SessionStatus,
    /// Unix milliseconds.
    pub modified: i64,
    pub connector_id: String,
    pub connector_title: String,
    pub connector_active: bool,
}

/// A chat in a record's chat list (`imopenlines.crm.chat.get`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRef {
    pub chat_id: i64,
    pub connector_id: String,
    pub connector_title: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub id: i64,
    pub line_id: i64,
    pub connector_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub id: i64,
    pub queue: Vec<i64>,
}

/// A chat member as the author hand-over rule sees it, in join order.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: i64,
    pub kind: UserKind,
    pub active: bool,
}

/// Retries of a failed event delivery unless `portal.events.retries` says otherwise.
pub const DEFAULT_EVENT_RETRIES: i64 = 10;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortalSettings {
    pub domain: String,
    pub language: String,
    pub modules: Vec<String>,
    pub plan: String,
    pub strict_line_permissions: bool,
    pub require_https: bool,
    /// `portal.events.retries`: attempts after the first for a failed event delivery.
    pub event_retries: i64,
}

impl PortalSettings {
    pub fn has_module(&self, module: &str) -> bool {
        self.modules.iter().any(|m| m == module)
    }
}
