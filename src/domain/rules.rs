//! Pure rules of `docs/methods.md`: permissions and chat resolution.

use super::{ChatId, ChatRef, CrmRecord, Line, LineLevel, Member, ReadLevel, SessionLink, User, UserId, UserKind};

/// May `user` read `record`? Admins read everything; otherwise the per-type level decides.
pub fn can_read_record(user: &User, record: &CrmRecord) -> bool {
    if user.admin {
        return true;
    }
    match user.crm_read[record.entity_type.index()] {
        ReadLevel::All => true,
        ReadLevel::Own => record.responsible == user.id || record.observers.contains(&user.id),
        ReadLevel::None => false,
    }
}

/// Does `level` (a `join` or `history` permission of `user`) allow acting on chats of `line`?
pub fn line_allows(user: &User, level: LineLevel, line: &Line) -> bool {
    if user.admin {
        return true;
    }
    match level {
        LineLevel::All => true,
        LineLevel::OwnLines => line.queue.contains(&user.id),
        LineLevel::None => false,
    }
}

/// The chat of the most recently modified session bound to the record, whatever its status and connector.
/// Ties on the modification time go to the later session.
pub fn last_chat(links: &[SessionLink]) -> Option<ChatId> {
    links.iter().max_by_key(|l| (l.modified, l.session_id)).map(|l| ChatId(l.chat_id))
}

/// The record's chats, newest session first, each chat once. Chats that came through a connector that is
/// now inactive are left out; with `active_only`, so are chats whose bound sessions are all inactive.
pub fn record_chats(links: &[SessionLink], active_only: bool) -> Vec<ChatRef> {
    let mut sorted: Vec<&SessionLink> =
        links.iter().filter(|l| l.connector_active && (!active_only || l.status.is_active())).collect();
    sorted.sort_by_key(|l| std::cmp::Reverse((l.modified, l.session_id)));
    let mut out: Vec<ChatRef> = Vec::new();
    for l in sorted {
        if !out.iter().any(|c| c.chat_id == l.chat_id) {
            out.push(ChatRef {
                chat_id: l.chat_id,
                connector_id: l.connector_id.clone(),
                connector_title: l.connector_title.clone(),
            });
        }
    }
    out
}

/// A chat belongs to a record when it is in the record's *active* chat list.
pub fn chat_belongs_to_record(links: &[SessionLink], ChatId(chat_id): ChatId) -> bool {
    links.iter().any(|l| l.chat_id == chat_id && l.connector_active && l.status.is_active())
}

/// May `member` become the chat's author when `leaving` (the author) leaves? The longest-standing remaining
/// member who may takes over; when none may, the author stays unchanged. The stores walk the members in join
/// order and ask member by member, so that they look up as few users as they can.
pub fn may_take_over(member: &Member, UserId(leaving): UserId) -> bool {
    member.user_id != leaving && member.active && member.kind == UserKind::Employee
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CrmEntityType, SessionStatus};

    fn user(id: i64) -> User {
        User {
            id,
            name: String::new(),
            last_name: String::new(),
            active: true,
            kind: UserKind::Employee,
            admin: false,
            crm_read: [ReadLevel::All; 4],
            line_join: LineLevel::OwnLines,
            line_history: LineLevel::OwnLines,
        }
    }

    fn link(session_id: i64, chat_id: i64, status: i64, modified: i64, active: bool) -> SessionLink {
        SessionLink {
            session_id,
            chat_id,
            status: SessionStatus(status),
            modified,
            connector_id: "livechat".into(),
            connector_title: "Online chat".into(),
            connector_active: active,
        }
    }

    #[test]
    fn own_read_level_needs_responsible_or_observer() {
        let record = CrmRecord { entity_type: CrmEntityType::Deal, id: 1, responsible: 5, observers: vec![6] };
        let mut u = user(7);
        u.crm_read[CrmEntityType::Deal.index()] = ReadLevel::Own;
        assert!(!can_read_record(&u, &record));
        u.id = 5;
        assert!(can_read_record(&u, &record));
        u.id = 6;
        assert!(can_read_record(&u, &record));
        u.crm_read[CrmEntityType::Deal.index()] = ReadLevel::None;
        assert!(!can_read_record(&u, &record));
        u.admin = true;
        assert!(can_read_record(&u, &record));
    }

    #[test]
    fn line_self_level_needs_queue_membership() {
        let line = Line { id: 1, queue: vec![12] };
        let mut u = user(13);
        assert!(!line_allows(&u, LineLevel::OwnLines, &line));
        assert!(line_allows(&u, LineLevel::All, &line));
        assert!(!line_allows(&u, LineLevel::None, &line));
        u.id = 12;
        assert!(line_allows(&u, LineLevel::OwnLines, &line));
    }

    #[test]
    fn last_chat_ignores_status_and_connector() {
        let links = vec![link(1, 100, 40, 10, true), link(2, 200, 60, 20, false)];
        assert_eq!(last_chat(&links), Some(ChatId(200)));
        assert_eq!(last_chat(&[]), None);
    }

    #[test]
    fn active_list_skips_closed_queued_and_inactive_connectors() {
        let links = vec![
            link(1, 100, 40, 10, true),
            link(2, 200, 60, 20, true),
            link(3, 300, 0, 30, true),
            link(4, 400, 40, 40, false),
            link(5, 100, 10, 50, true),
        ];
        let active: Vec<i64> = record_chats(&links, true).iter().map(|c| c.chat_id).collect();
        assert_eq!(active, vec![100]);
        let all: Vec<i64> = record_chats(&links, false).iter().map(|c| c.chat_id).collect();
        assert_eq!(all, vec![100, 300, 200]);
        assert!(chat_belongs_to_record(&links, ChatId(100)));
        assert!(!chat_belongs_to_record(&links, ChatId(200)));
        assert!(!chat_belongs_to_record(&links, ChatId(400)));
    }

    /// The hand-over as the stores run it: the first member in join order who may take over.
    fn next_author(members_in_join_order: &[Member], leaving: i64) -> Option<i64> {
        members_in_join_order.iter().find(|m| may_take_over(m, UserId(leaving))).map(|m| m.user_id)
    }

    #[test]
    fn author_passes_to_longest_standing_active_employee() {
        let m = |user_id, kind, active| Member { user_id, kind, active };
        let members = vec![
            m(12, UserKind::Employee, true),
            m(20, UserKind::Bot, true),
            m(13, UserKind::Employee, false),
            m(14, UserKind::Employee, true),
            m(15, UserKind::Employee, true),
        ];
        assert_eq!(next_author(&members, 12), Some(14));
        assert_eq!(next_author(&members[..3], 12), None);
    }
}
