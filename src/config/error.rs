//! Error types for agent.yaml loading: every problem names its file, position and key path.

use std::fmt;
use std::path::PathBuf;

/// One problem in an agent file, positioned at the key it concerns.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`; the position and the key are
/// left out when unknown or empty (e.g. `agent.yaml: cannot read file: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in (as given to the loader).
    pub file: PathBuf,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// 1-based column of the key, when known.
    pub column: Option<usize>,
    /// Full key path, e.g. `actions[1].context.timeout`; empty for file-level problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error without a source position (e.g. an IO error, or one raised by the host
    /// about a file it no longer has positions for).
    pub fn new(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found while loading, not just the first; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors, in file order and then source order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let mut e = ConfigError::new("agent.yaml", "actions[0].context.timeout", "bad");
        assert_eq!(e.to_string(), "agent.yaml: actions[0].context.timeout: bad");
        e.line = Some(7);
        e.column = Some(7);
        assert_eq!(
            e.to_string(),
            "agent.yaml:7:7: actions[0].context.timeout: bad"
        );
        let io = ConfigError::new("x.yaml", "", "cannot read file");
        assert_eq!(io.to_string(), "x.yaml: cannot read file");
        let all = ConfigErrors(vec![e, io]);
        assert_eq!(
            all.to_string(),
            "agent.yaml:7:7: actions[0].context.timeout: bad\nx.yaml: cannot read file"
        );
    }
}
