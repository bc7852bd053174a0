//! `${NAME}` and `${NAME:-default}` expansion of config strings.
//!
//! Every string value of the config may name environment variables. The
//! expansion is done once, at load, by [`expand`]; an unset variable without
//! a default is an error naming the variable (never a value).

use thiserror::Error;

/// Why a string could not be expanded.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum EnvError {
    #[error("environment variable {0} is not set")]
    Unset(String),
    #[error("unterminated ${{...}} reference")]
    Unterminated,
    #[error("invalid variable name {0:?} in ${{...}}")]
    BadName(String),
}

/// Expands `${NAME}` and `${NAME:-default}` in `input`, looking variables up
/// with `lookup`. `$$` stands for a literal `$`; a `$` not followed by `{` is
/// kept as it is.
pub(crate) fn expand(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(EnvError::Unterminated)?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(EnvError::BadName(name.to_string()));
            }
            // `${NAME:-default}`: the default also applies to an empty value,
            // as in POSIX shells.
            match (lookup(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(EnvError::Unset(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The process environment, as a lookup for [`expand`].
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("api.example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(
            expand("https://${HOST}/x", &env).unwrap(),
            "https://api.example.com/x"
        );
        assert_eq!(expand("${MISSING:-15m}", &env).unwrap(), "15m");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(expand("a$$b $x", &env).unwrap(), "a$b $x");
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        assert_eq!(expand("${NOPE}", &env), Err(EnvError::Unset("NOPE".into())));
        assert_eq!(expand("${HOST", &env), Err(EnvError::Unterminated));
        assert_eq!(expand("${A B}", &env), Err(EnvError::BadName("A B".into())));
    }
}
