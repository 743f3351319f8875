//! A small mustache-style renderer for agent prompts and greetings.
//!
//! `{{name}}` and `{{ name }}` are replaced by the value of variable `name`. A variable that the
//! call does not define renders as the empty string and is reported in [`Rendered::missing`] so
//! the caller can log it. Anything else (a lone `{{`, `{{ }}`, a name with spaces inside) is kept
//! as written. Names are ASCII letters, digits, `_`, `-` and `.`.

use std::collections::BTreeMap;

/// The result of rendering one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text with every variable replaced.
    pub text: String,
    /// Names used by the template that the variables did not define, in order of appearance,
    /// each once.
    pub missing: Vec<String>,
}

/// Renders `template` with `variables`.
pub fn render(template: &str, variables: &BTreeMap<String, String>) -> Rendered {
    let mut text = String::with_capacity(template.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        text.push_str(&rest[..open]);
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            text.push_str(&rest[open..]);
            return Rendered { text, missing };
        };
        let name = after_open[..close].trim();
        if is_variable_name(name) {
            match variables.get(name) {
                Some(value) => text.push_str(value),
                None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_owned());
                    }
                }
            }
            rest = &after_open[close + 2..];
        } else {
            // Not a variable: keep the braces and continue right after them.
            text.push_str("{{");
            rest = after_open;
        }
    }
    text.push_str(rest);
    Rendered { text, missing }
}

/// Whether `name` may name a template variable.
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn replaces_with_and_without_spaces() {
        let out = render(
            "Hi {{name}}, your slot is {{ time }}.",
            &vars(&[("name", "Ada"), ("time", "9:00")]),
        );
        assert_eq!(out.text, "Hi Ada, your slot is 9:00.");
        assert!(out.missing.is_empty());
    }

    #[test]
    fn unknown_variables_render_empty_and_are_reported_once() {
        let out = render("{{a}}-{{b}}-{{ b }}", &vars(&[("a", "1")]));
        assert_eq!(out.text, "1--");
        assert_eq!(out.missing, vec!["b".to_owned()]);
    }

    #[test]
    fn non_variables_are_kept() {
        let empty = BTreeMap::new();
        assert_eq!(render("a {{ }} b", &empty).text, "a {{ }} b");
        assert_eq!(render("a {{x y}} b", &empty).text, "a {{x y}} b");
        assert_eq!(render("open {{ never", &empty).text, "open {{ never");
        assert_eq!(render("}} {", &empty).text, "}} {");
    }

    #[test]
    fn values_are_not_rendered_again() {
        let out = render("{{a}}", &vars(&[("a", "{{b}}"), ("b", "x")]));
        assert_eq!(out.text, "{{b}}");
    }

    #[test]
    fn multibyte_text_survives() {
        let out = render("héllo {{n}} ✓", &vars(&[("n", "wörld")]));
        assert_eq!(out.text, "héllo wörld ✓");
    }
}
