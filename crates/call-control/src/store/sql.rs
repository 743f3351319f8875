//! The store's SQL text as both of its databases read it.
//!
//! Queries are written with `?` placeholders, bound in the order they appear (so that a
//! condition built from pieces needs no counting). PostgreSQL only reads numbered
//! placeholders (`$1`, `$2`, ...); SQLite reads those too, binding `$N` to the N-th value.
//! [`numbered`] turns the one into the other before a query is sent to either.

use std::borrow::Cow;

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ... in order; an explicit `?N` is
/// `$N` (and, as in SQLite, a bare `?` after it takes the number after the largest so far);
/// a `?` inside a quoted string literal or identifier is text and stays.
pub(crate) fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1u32;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            // A doubled quote inside a literal closes and reopens it: the same state.
            (Some(open), _) if c == open => {
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                out.push('$');
                let mut given = 0u32;
                let mut explicit = false;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    given = given.saturating_mul(10).saturating_add(digit);
                    explicit = true;
                    chars.next();
                }
                let number = if explicit { given } else { next };
                out.push_str(&number.to_string());
                next = next.max(number + 1);
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = ? WHERE id = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE id = $3"
        );
        assert!(matches!(
            numbered("SELECT 1"),
            std::borrow::Cow::Borrowed("SELECT 1")
        ));
    }

    #[test]
    fn explicit_numbers_stay_and_a_bare_placeholder_follows_the_largest() {
        assert_eq!(numbered("VALUES (?, ?2, ?2, ?)"), "VALUES ($1, $2, $2, $3)");
        assert_eq!(numbered("VALUES (?1, ?1)"), "VALUES ($1, $1)");
    }

    #[test]
    fn a_question_mark_in_a_literal_is_text() {
        assert_eq!(
            numbered(
                "SELECT 'what?', \"odd?col\" FROM t WHERE a = ? AND b LIKE 'it''s?' AND c = ?"
            ),
            "SELECT 'what?', \"odd?col\" FROM t WHERE a = $1 AND b LIKE 'it''s?' AND c = $2"
        );
    }
}
