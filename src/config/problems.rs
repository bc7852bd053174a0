//! Collecting config problems: [`Ctx`] carries the variable lookup and the
//! list of problems found so far, so validation goes on after the first one.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::{self, EnvError};

/// One thing wrong with the config: where (`proxy` or `route "name"`), which
/// key, and why. Never holds a configured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub(crate) scope: String,
    pub(crate) key: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.scope, self.key, self.message)
    }
}

pub(super) fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validation context: expands variables and records problems.
pub(crate) struct Ctx<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    base_dir: PathBuf,
    scope: String,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>, base_dir: &Path) -> Self {
        Ctx {
            lookup,
            base_dir: base_dir.to_path_buf(),
            scope: "proxy".to_string(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Sets the scope named by the following problems.
    pub(crate) fn set_scope(&mut self, scope: String) {
        self.scope = scope;
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let scope = self.scope.clone();
        self.problem_in(&scope, key, message.into());
    }

    pub(crate) fn problem_in(&mut self, scope: &str, key: &str, message: String) {
        self.problems.push(Problem {
            scope: scope.to_string(),
            key: key.to_string(),
            message,
        });
    }

    pub(crate) fn warning(&mut self, key: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            scope: self.scope.clone(),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Expands `${VAR}` in `raw`; on failure records a problem for `key` and
    /// returns `None`.
    pub(crate) fn expand(&mut self, key: &str, raw: &str) -> Option<String> {
        match env::expand(raw, self.lookup) {
            Ok(value) => Some(value),
            Err(EnvError::Unset(name)) => {
                self.problem(key, format!("environment variable {name} is not set"));
                None
            }
            Err(e) => {
                self.problem(key, e.to_string());
                None
            }
        }
    }

    /// Expands an optional value.
    pub(crate) fn expand_opt(&mut self, key: &str, raw: Option<&str>) -> Option<Option<String>> {
        match raw {
            None => Some(None),
            Some(raw) => self.expand(key, raw).map(Some),
        }
    }

    /// Expands a value that must not be empty after expansion (secrets,
    /// names, URLs).
    pub(crate) fn expand_nonempty(&mut self, key: &str, raw: &str) -> Option<String> {
        let value = self.expand(key, raw)?;
        if value.is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(value)
    }

    /// Expands a keyword and maps it to its value (case-insensitive), or
    /// returns `default` when the key is absent. An unknown keyword is a
    /// problem listing the accepted ones.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<&str>,
        default: T,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let value = self.expand(key, raw)?.to_ascii_lowercase();
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == value) {
            return Some(*v);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let list = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.problem(key, format!("must be {list}"));
        None
    }

    /// Expands and parses a humantime duration ("500ms", "15m"), or returns
    /// `default` when the key is absent.
    pub(crate) fn duration(
        &mut self,
        key: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let value = self.expand(key, raw)?;
        match humantime::parse_duration(value.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    key,
                    format!("not a duration ({e}); write e.g. \"500ms\", \"15m\""),
                );
                None
            }
        }
    }

    /// Expands a path and resolves it against the config file's folder.
    pub(crate) fn path(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let value = self.expand_nonempty(key, raw)?;
        let path = PathBuf::from(value);
        Some(if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        })
    }

    pub(super) fn finish(self) -> (Vec<Problem>, Vec<Problem>) {
        (self.problems, self.warnings)
    }
}

impl Ctx<'_> {
    /// The address `raw` (after `${VAR}` expansion) as `IP:port`.
    pub(crate) fn socket_addr(&mut self, key: &str, raw: &str) -> Option<SocketAddr> {
        let value = self.expand_nonempty(key, raw)?;
        self.parse_addr(key, &value)
    }

    /// `value` as `IP:port`, or a problem naming `key`.
    pub(crate) fn parse_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    "not an address; write \"IP:port\", e.g. \"127.0.0.1:8080\"",
                );
                None
            }
        }
    }
}
