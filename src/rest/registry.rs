//! The method registry: every vendor method crmchat serves, with its scope and handler.

use crate::methods::{Handler, crm_chat};

pub struct MethodDef {
    /// Lower-case, as the URL's method segment is matched after lower-casing.
    pub name: &'static str,
    /// `None` for global methods that need no scope.
    pub scope: Option<&'static str>,
    pub handler: Handler,
}

pub static METHODS: &[MethodDef] = &[MethodDef {
    name: "imopenlines.crm.chat.user.delete",
    scope: Some("imopenlines"),
    handler: crm_chat::user_delete_handler,
}];

pub fn find(name: &str) -> Option<&'static MethodDef> {
    METHODS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_lower_case_and_unique() {
        let mut names: Vec<&str> = super::METHODS.iter().map(|m| m.name).collect();
        assert!(names.iter().all(|n| *n == n.to_lowercase()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::METHODS.len());
    }
}
