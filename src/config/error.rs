//! Configuration errors that point at the file, line and column, and say what was expected.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("the built-in defaults (config/default.toml)"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}:{line}:{column}: {message}\n{excerpt}")]
    Invalid {
        origin: Source,
        line: usize,
        column: usize,
        message: String,
        excerpt: String,
    },
    #[error("{origin}: {message}")]
    Unlocated { origin: Source, message: String },
    #[error("cannot read the config file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Value(String),
}

impl ConfigError {
    /// An error at byte range `span` of `text`.
    pub fn at(
        source: &Source,
        text: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, span.start);
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let width = text[span.start.min(text.len())..span.end.min(text.len())]
            .lines()
            .next()
            .map_or(1, |s| s.chars().count().max(1));
        let excerpt = format!(
            "{line:>4} | {line_text}\n     | {}{}",
            " ".repeat(column - 1),
            "^".repeat(width)
        );
        ConfigError::Invalid {
            origin: source.clone(),
            line,
            column,
            message: message.into(),
            excerpt,
        }
    }

    pub fn from_toml(source: &Source, text: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        match err.span() {
            Some(span) => ConfigError::at(source, text, span, message),
            None => ConfigError::Unlocated {
                origin: source.clone(),
                message,
            },
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // after the two-byte é, the column counts characters
        assert_eq!(line_column(text, 11), (2, 5));
    }
}
