//! The operator's TOML files (the policy, the sinks' configuration): read,
//! parsed by their own module, and an error that points at
//! `path:line:column`.

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read the {what} {path}: {err}")]
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads `path` (a `what`, for the error) and parses it with `parse`, whose
/// errors carry the byte range at fault.
pub fn load<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&str) -> Result<T, (Range<usize>, String)>,
) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|err| FileError::Read {
        what,
        path: path.to_path_buf(),
        err,
    })?;
    parse(&text).map_err(|(span, message)| {
        let (line, column) = line_col(&text, span.start);
        FileError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
