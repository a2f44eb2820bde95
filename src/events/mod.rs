//! Events: what crmchat can post to the handlers applications bind, and (in `delivery`) the posting.

pub mod delivery;
pub mod lifecycle;
pub mod log;
pub mod wire;

/// An event crmchat produces, as `event.bind` and `events` know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDef {
    /// Upper-case, as bound and delivered.
    pub name: &'static str,
    /// `None`: global, bindable with any scope.
    pub scope: Option<&'static str>,
    /// The event cannot have an offline binding (the vendor's `disableOffline`).
    pub online_only: bool,
}

const fn event(name: &'static str, scope: Option<&'static str>) -> EventDef {
    EventDef { name, scope, online_only: false }
}

/// Every event, global ones first (the order `events` lists them in).
pub static EVENTS: &[EventDef] = &[
    event("ONAPPINSTALL", None),
    event("ONAPPUNINSTALL", None),
    event("ONAPPTEST", None),
    EventDef { name: "ONOFFLINEEVENT", scope: None, online_only: true },
    event("ONCRMCHATUSERADD", Some("imopenlines")),
    event("ONCRMCHATUSERDELETE", Some("imopenlines")),
    event("ONOPENLINEMESSAGEADD", Some("imopenlines")),
];

/// The event named `name` (upper-case) if one of `scopes` or the global scope has it.
pub fn find(name: &str, scopes: &[String]) -> Option<&'static EventDef> {
    EVENTS.iter().find(|e| e.name == name && e.scope.is_none_or(|s| scopes.iter().any(|g| g == s)))
}

/// An event that changes of the portal produce (not an application's own lifecycle): what an outgoing webhook
/// may be sent.
pub fn is_portal_event(name: &str) -> bool {
    EVENTS.iter().any(|e| e.name == name && e.scope.is_some())
}

/// Why a handler URL is refused, as the vendor checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerUrlError {
    /// No host, or a host without a dot after its first character (`localhost`).
    WrongUrl,
    /// A scheme other than http and https.
    UnsupportedProtocol,
}

/// The vendor's handler check: the URL's host must contain a dot somewhere after its first character, and
/// only then is the scheme looked at. So `http://localhost:3000/` is refused and `http://127.0.0.1:3000/`
/// accepted, as on the vendor. The URL is split the way PHP's `parse_url` splits the usual shapes.
pub fn check_handler(url: &str) -> Result<(), HandlerUrlError> {
    let (scheme, rest) = match url.find("://") {
        Some(at) if is_scheme(&url[..at]) => (&url[..at], &url[at + 3..]),
        // `//host/path`: a host without a scheme.
        _ => match url.strip_prefix("//") {
            Some(rest) => ("", rest),
            None => return Err(HandlerUrlError::WrongUrl),
        },
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..host_port.find(']').map_or(host_port.len(), |i| i + 1)]
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() || !host.char_indices().any(|(i, c)| c == '.' && i > 0) {
        return Err(HandlerUrlError::WrongUrl);
    }
    if scheme != "http" && scheme != "https" {
        return Err(HandlerUrlError::UnsupportedProtocol);
    }
    Ok(())
}

fn is_scheme(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_urls_are_judged_like_the_vendor() {
        use HandlerUrlError::*;
        for (url, expected) in [
            ("http://127.0.0.1:3000/", Ok(())),
            ("https://example.com/handler?x=1", Ok(())),
            ("http://user:pw@a.b:8080/", Ok(())),
            ("http://localhost:3000/", Err(WrongUrl)),
            ("http://.com/", Err(WrongUrl)),
            ("example.com/handler", Err(WrongUrl)),
            ("", Err(WrongUrl)),
            ("http:///x.y", Err(WrongUrl)),
            ("ftp://files.example.com/", Err(UnsupportedProtocol)),
            ("//example.com/", Err(UnsupportedProtocol)),
            ("HTTP://example.com/", Err(UnsupportedProtocol)),
        ] {
            assert_eq!(check_handler(url), expected, "{url}");
        }
    }

    #[test]
    fn scoped_events_need_their_scope() {
        assert!(find("ONCRMCHATUSERDELETE", &["imopenlines".into()]).is_some());
        assert!(find("ONCRMCHATUSERDELETE", &["im".into()]).is_none());
        assert!(find("ONAPPTEST", &[]).is_some());
        assert!(find("ONSOMETHING", &["imopenlines".into()]).is_none());
    }
}
