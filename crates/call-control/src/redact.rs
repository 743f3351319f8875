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
}
