//! The generated portal: N deals, each with one chat of M members drawn from a pool of employees, written as a
//! portal state file (docs/state-format.md), and the list of its memberships the delete workloads remove.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

/// The webhooks of user 1 (an admin) that the requests go through: one per workload, as if each were its own
/// integration, so that the operating-time limit one workload may run into (480 s of calls slower than 0.1 s per
/// webhook and method in 10 minutes) does not carry over into the next.
pub const WEBHOOK_USER: i64 = 1;
pub const WEBHOOKS: usize = 8;

/// The bench's application in the portal file (no bindings there: the workload binds and unbinds its own).
pub const APP_CLIENT_ID: &str = "local.bench.app";
pub const APP_SECRET: &str = "crmchatBenchAppSecret";
pub const APP_TOKEN: &str = "crmchatBenchAppToken";

pub fn webhook_code(workload: usize) -> String {
    format!("crmchatBenchHook{workload:04}")
}
/// Employees are users `FIRST_EMPLOYEE ..`; chat `c` is bound to deal `DEAL_OFFSET + c` (distinct numbers, so a
/// response naming the wrong one of the two is caught).
const FIRST_EMPLOYEE: u32 = 1001;
pub const DEAL_OFFSET: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub chat: u32,
    pub user: u32,
}

impl Membership {
    pub fn deal(&self) -> i64 {
        DEAL_OFFSET + self.chat as i64
    }
}

pub struct Portal {
    pub chats: usize,
    pub members_per_chat: usize,
    pub employees: usize,
    /// Every membership, chat by chat in id order (chats are `1..=chats`), members in join order.
    pub memberships: Vec<Membership>,
}

impl Portal {
    pub fn generate(chats: usize, members_per_chat: usize, employees: usize, seed: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(chats > 0 && members_per_chat > 0, "--chats and --members must be positive");
        anyhow::ensure!(members_per_chat <= employees, "--members {members_per_chat} exceeds --users {employees}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut memberships = Vec::with_capacity(chats * members_per_chat);
        for chat in 1..=chats as u32 {
            // Distinct within a chat.
            for i in rand::seq::index::sample(&mut rng, employees, members_per_chat) {
                memberships.push(Membership { chat, user: FIRST_EMPLOYEE + i as u32 });
            }
        }
        Ok(Self { chats, members_per_chat, employees, memberships })
    }

    pub fn chat_members(&self, chat: u32) -> &[Membership] {
        let start = (chat as usize - 1) * self.members_per_chat;
        &self.memberships[start..start + self.members_per_chat]
    }

    /// The state file: plan `unlimited`, admin user 1 with the webhook, the employees, one line with an active
    /// livechat connector, the deals and their chats, each with one session in status `operator`.
    pub fn write_state(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let portal = json!({"domain": "bench.crmchat.localhost", "plan": "unlimited"});
        write!(w, "{{\"portal\":{portal},\n\"users\":[")?;
        let admin = json!({"id": WEBHOOK_USER, "name": "Bench", "last_name": "Admin", "admin": true});
        write!(w, "{admin}")?;
        for i in 0..self.employees as u32 {
            let id = FIRST_EMPLOYEE + i;
            // Operators who may join and read every chat of the line: the refill between the hot workloads adds
            // them back to chats they have just left, which `user.add` allows only with the `history` permission.
            let employee =
                json!({"id": id, "name": format!("Employee {id}"), "lines": {"join": "all", "history": "all"}});
            write!(w, ",\n{employee}")?;
        }
        write!(w, "],\n\"crm\":[")?;
        for chat in 1..=self.chats as u32 {
            let first = self.chat_members(chat)[0];
            let deal =
                json!({"type": "deal", "id": first.deal(), "title": format!("Deal {chat}"), "responsible": first.user});
            write!(w, "{}{deal}", if chat == 1 { "" } else { ",\n" })?;
        }
        let line = json!({"id": 1, "name": "Bench", "queue": [FIRST_EMPLOYEE],
            "connectors": [{"id": "livechat", "title": "Online chat", "active": true}]});
        write!(w, "],\n\"lines\":[{line}],\n\"chats\":[")?;
        for chat in 1..=self.chats as u32 {
            let members = self.chat_members(chat);
            let users: Vec<u32> = members.iter().map(|m| m.user).collect();
            let def = json!({"id": chat, "line": 1, "connector": "livechat", "author": users[0], "members": users,
                "sessions": [{"id": chat, "status": "operator", "modified": "2026-01-01T00:00:00Z",
                              "crm": [{"type": "deal", "id": members[0].deal()}]}]});
            write!(w, "{}{def}", if chat == 1 { "" } else { ",\n" })?;
        }
        write!(w, "],\n\"webhooks\":[")?;
        for i in 0..WEBHOOKS {
            let hook = json!({"user": WEBHOOK_USER, "code": webhook_code(i), "scopes": ["imopenlines", "im"]});
            write!(w, "{}{hook}", if i == 0 { "" } else { ",\n" })?;
        }
        // The application the bound workload binds its handler with (through `event.bind`, not here: a binding in
        // the file would make every workload's removals produce events).
        let app = json!({"client_id": APP_CLIENT_ID, "client_secret": APP_SECRET,
            "scopes": ["imopenlines", "im"], "application_token": APP_TOKEN});
        write!(w, "],\n\"apps\":[{app}")?;
        writeln!(w, "]}}")?;
        w.flush()?;
        Ok(())
    }
}

/// The memberships the delete workloads remove, in whole chats. The hot set is a run of chats from the front
/// (in id order: all members of chat 1, then chat 2, …), which both hot workloads remove, the bench adding back
/// between them what the first removed; the uniform workload gets a shuffle of the memberships of all chats
/// after the part of the hot set that was used. The bound workload's chats are set aside first, at the end.
pub struct Partitions<'a> {
    portal: &'a Portal,
    /// Index of the first membership not yet handed to a workload; always at a chat boundary.
    cursor: usize,
    /// One past the last membership the other workloads may have: the chats after it are set aside.
    end: usize,
}

impl<'a> Partitions<'a> {
    pub fn new(portal: &'a Portal) -> Self {
        Self { portal, cursor: 0, end: portal.memberships.len() }
    }

    pub fn remaining(&self) -> usize {
        self.end - self.cursor
    }

    /// Every membership of the last `chats` chats, shuffled, set aside from the other partitions.
    pub fn tail(&mut self, chats: usize, seed: u64) -> Vec<Membership> {
        let start = self.end.saturating_sub(chats * self.portal.members_per_chat).max(self.cursor);
        let mut items = self.portal.memberships[start..self.end].to_vec();
        items.shuffle(&mut StdRng::seed_from_u64(seed));
        self.end = start;
        items
    }

    /// The next `wanted` memberships (rounded up to whole chats) in chat order.
    pub fn hot(&mut self, wanted: usize) -> Vec<Membership> {
        let end = self.chat_boundary(self.cursor + wanted);
        self.portal.memberships[self.cursor..end].to_vec()
    }

    /// Mark the first `used` memberships of the last `hot` partition as consumed: the next partition starts at
    /// the next chat, so no chat is shared between two workloads.
    pub fn consume(&mut self, used: usize) {
        self.cursor = self.chat_boundary(self.cursor + used);
    }

    /// Every membership of the chats not yet handed out, shuffled.
    pub fn uniform(&mut self, seed: u64) -> Vec<Membership> {
        let mut items = self.portal.memberships[self.cursor..self.end].to_vec();
        items.shuffle(&mut StdRng::seed_from_u64(seed));
        self.cursor = self.end;
        items
    }

    fn chat_boundary(&self, index: usize) -> usize {
        let per = self.portal.members_per_chat;
        (index.div_ceil(per) * per).min(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_disjoint_whole_chats() {
        let portal = Portal::generate(10, 3, 5, 1).unwrap();
        assert_eq!(portal.memberships.len(), 30);
        for chat in 1..=10 {
            let mut users: Vec<u32> = portal.chat_members(chat).iter().map(|m| m.user).collect();
            users.sort();
            users.dedup();
            assert_eq!(users.len(), 3);
        }
        let mut parts = Partitions::new(&portal);
        let tail = parts.tail(2, 3);
        assert_eq!(tail.len(), 6);
        assert!(tail.iter().all(|m| m.chat >= 9));
        assert_eq!(parts.remaining(), 24);
        let a = parts.hot(4);
        assert_eq!(a.len(), 6);
        parts.consume(4);
        let b = parts.hot(7);
        assert_eq!(b[0].chat, 3);
        assert_eq!(b.len(), 9);
        parts.consume(9);
        let c = parts.uniform(7);
        assert_eq!(c.len(), 9);
        assert!(c.iter().all(|m| (6..=8).contains(&m.chat)));
        assert_eq!(parts.remaining(), 0);
    }
}
