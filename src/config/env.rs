//! `${NAME}` / `${NAME:-default}` expansion in string values, and re-typing of a value that
//! is exactly one reference (`timeout: ${T:-30}` is the integer 30).

use serde_json::Value;

/// Result of expanding one string scalar.
#[derive(Debug, PartialEq)]
pub(crate) enum Expanded {
    /// No `$` sequence: use the original string.
    Unchanged,
    /// Text mixing literals and references (or only `$$` escapes): always a string.
    Text(String),
    /// The whole scalar was exactly one `${...}` reference: re-type it like a YAML scalar.
    Single(String),
}

/// Expands references in `input` in one left-to-right pass, so substituted text (values and
/// defaults) is never expanded again. `$$` is a literal `$`; a `$` followed by anything
/// else is kept as is. `${NAME:-default}` uses the default when NAME is unset or empty,
/// as in POSIX shells.
pub(crate) fn expand(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, String> {
    if !input.contains('$') {
        return Ok(Expanded::Unchanged);
    }
    let mut out = String::with_capacity(input.len());
    let mut references = 0;
    let mut whole_reference = false;
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{input}` (missing `}}`)"))?;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_env_name(name) {
                return Err(format!(
                    "invalid environment variable reference `${{{inner}}}` (expected `${{NAME}}` or `${{NAME:-default}}`)"
                ));
            }
            let value = match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Some(value), _) => value,
                (None, Some(default)) => default.to_owned(),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (use `${{{name}:-default}}` to give a default)"
                    ));
                }
            };
            out.push_str(&value);
            references += 1;
            whole_reference = dollar == 0 && rest.len() == input.len() && close + 1 == body.len();
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if references == 1 && whole_reference {
        Ok(Expanded::Single(out))
    } else {
        Ok(Expanded::Text(out))
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Types `text` as a plain YAML scalar would be (null, bool, int, float), else a string.
/// Empty text stays an empty string: `${TOKEN:-}` means "no token", not null.
pub(crate) fn retype(text: &str) -> Value {
    match text {
        "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(number) = parse_int(text) {
        return number;
    }
    let float_chars = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    // The character check keeps Rust's `inf`/`NaN` spellings out; JSON has no such numbers.
    if float_chars
        && text.chars().any(|c| c.is_ascii_digit())
        && let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
    {
        return Value::Number(number);
    }
    Value::String(text.to_owned())
}

fn parse_int(text: &str) -> Option<Value> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = unsigned.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = unsigned.strip_prefix("0o") {
        (8, octal)
    } else {
        (10, unsigned)
    };
    // from_str_radix would accept a second sign; digits only.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = i64::try_from(magnitude)
            .ok()
            .map(|m| -m)
            .or_else(|| (magnitude == i64::MIN.unsigned_abs()).then_some(i64::MIN))?;
        Some(Value::from(value))
    } else {
        Some(Value::from(magnitude))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("${HOST}$$".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn run(input: &str) -> Result<Expanded, String> {
        expand(input, &env)
    }

    #[test]
    fn set_default_and_unset() {
        assert_eq!(run("plain"), Ok(Expanded::Unchanged));
        assert_eq!(run("${HOST}"), Ok(Expanded::Single("example.com".into())));
        assert_eq!(run("${NOPE:-30}"), Ok(Expanded::Single("30".into())));
        assert_eq!(
            run("${HOST:-other}"),
            Ok(Expanded::Single("example.com".into()))
        );
        assert_eq!(run("${EMPTY:-d}"), Ok(Expanded::Single("d".into())));
        assert_eq!(run("${EMPTY}"), Ok(Expanded::Single(String::new())));
        assert_eq!(run("${NOPE:-}"), Ok(Expanded::Single(String::new())));
        assert_eq!(
            run("https://${HOST}:${PORT}/x"),
            Ok(Expanded::Text("https://example.com:8080/x".into()))
        );
        let err = run("a ${NOPE} b").unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn escapes_and_no_reexpansion() {
        assert_eq!(run("$$"), Ok(Expanded::Text("$".into())));
        assert_eq!(run("$${HOST}"), Ok(Expanded::Text("${HOST}".into())));
        assert_eq!(run("cost: $5"), Ok(Expanded::Text("cost: $5".into())));
        assert_eq!(run("${TRICKY}"), Ok(Expanded::Single("${HOST}$$".into())));
        assert_eq!(
            run("${NOPE:-${HOST}"),
            Ok(Expanded::Single("${HOST".into()))
        );
        assert_eq!(run("x${HOST}"), Ok(Expanded::Text("xexample.com".into())));
        assert_eq!(
            run("${HOST}${HOST}"),
            Ok(Expanded::Text("example.comexample.com".into()))
        );
    }

    #[test]
    fn malformed_references() {
        assert!(run("${HOST").unwrap_err().contains("unterminated"));
        assert!(run("${}").unwrap_err().contains("invalid"));
        assert!(run("${1X}").unwrap_err().contains("invalid"));
        assert!(run("${A B}").unwrap_err().contains("invalid"));
    }

    #[test]
    fn retyping() {
        assert_eq!(retype("30"), json!(30));
        assert_eq!(retype("-7"), json!(-7));
        assert_eq!(retype("+7"), json!(7));
        assert_eq!(retype("0x1F"), json!(31));
        assert_eq!(retype("0o17"), json!(15));
        assert_eq!(retype("18446744073709551615"), json!(u64::MAX));
        assert_eq!(retype("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(retype("1.5"), json!(1.5));
        assert_eq!(retype("1e3"), json!(1000.0));
        assert_eq!(retype("true"), json!(true));
        assert_eq!(retype("FALSE"), json!(false));
        assert_eq!(retype("~"), Value::Null);
        assert_eq!(retype(""), json!(""));
        assert_eq!(retype("inf"), json!("inf"));
        assert_eq!(retype("1.2.3"), json!("1.2.3"));
        assert_eq!(retype("--1"), json!("--1"));
        assert_eq!(retype("yes"), json!("yes"));
        assert_eq!(retype("0x"), json!("0x"));
    }
}
