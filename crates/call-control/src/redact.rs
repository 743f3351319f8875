//! What may be logged of values that carry secrets.

/// The URL without its query and credentials, for logs (both may carry secrets: webhook
/// URLs often hold a token in the query, agent URLs a password in the authority).
pub fn loggable_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}/{path}")
        }
        None => without_query.to_owned(),
    }
}

/// What `Debug` shows of a secret value.
pub const REDACTED: &str = "<redacted>";

/// A map of header names to values as `Debug` shows it: names kept, values [`REDACTED`].
pub fn header_names(
    headers: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    headers
        .keys()
        .map(|name| (name.as_str(), REDACTED))
        .collect()
}

/// An optional secret as `Debug` shows it: whether it is set, never its value.
pub fn secret(value: Option<&str>) -> Option<&'static str> {
    value.map(|_| REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_credentials_are_left_out() {
        assert_eq!(
            loggable_url("https://hooks.example/in?token=s3cret#x"),
            "https://hooks.example/in"
        );
        assert_eq!(
            loggable_url("https://user:pw@hooks.example:8443/a/b?k=v"),
            "https://hooks.example:8443/a/b"
        );
    }

    #[test]
    fn debug_forms_of_models_leave_secrets_out() {
        use crate::model::{InboundAuth, Runtime, Trunk, TrunkTransport, Webhook};
        let trunk = Trunk {
            id: "trk_1".into(),
            org_id: "org_1".into(),
            name: "t".into(),
            host: "127.0.0.1".into(),
            port: 5060,
            transport: TrunkTransport::Udp,
            username: Some("user".into()),
            password: Some("pw-in-debug".into()),
            allowed_networks: vec![],
            inbound_auth: Some(InboundAuth {
                username: "carrier".into(),
                password: "inbound-in-debug".into(),
            }),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let webhook = Webhook {
            id: "whk_1".into(),
            org_id: "org_1".into(),
            url: "https://h.example/in?token=tok-in-debug".into(),
            events: vec![],
            secret: "whsec-in-debug".into(),
            created_at: chrono::Utc::now(),
        };
        let runtime = Runtime::Websocket {
            url: "wss://a.example/s?key=url-in-debug".into(),
            headers: [("Authorization".to_owned(), "Bearer hdr-in-debug".to_owned())].into(),
            format: None,
        };
        let shown = format!("{trunk:?} {webhook:?} {runtime:?}");
        assert!(!shown.contains("in-debug"), "{shown}");
        assert!(shown.contains("Authorization") && shown.contains("<redacted>"));
    }
}
