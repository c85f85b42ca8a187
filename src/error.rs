//! The library's error type. Every message is one line: what, why, and what to do
//! (`nethook: <what>: <why>; <what to do>`, DESIGN.md section 9).

use std::fmt;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// Bad input from the user, the runtime or a config file.
    #[error("{what}: {why}; {fix}")]
    Invalid {
        what: String,
        why: String,
        fix: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}; {fix}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
        fix: String,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {why}; {fix}")]
    Kernel {
        what: String,
        why: String,
        fix: String,
    },
    /// The nftables layer failed.
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
    /// Several errors collected by a best-effort operation (teardown, rollback).
    #[error("{0}")]
    List(ErrorList),
}

impl Error {
    pub fn invalid(
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
    pub fn io(what: impl Into<String>, source: std::io::Error, fix: impl Into<String>) -> Self {
        Error::Io {
            what: what.into(),
            source,
            fix: fix.into(),
        }
    }
    pub fn kernel(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Kernel {
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
    /// True when the error says the thing is already gone (teardown treats that as success).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors collected while going on (teardown and rollback do as much as they can, then report).
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<Error>);

impl ErrorList {
    pub fn push(&mut self, e: Error) {
        self.0.push(e);
    }
    /// Record the error of a step, if any, and go on.
    pub fn note<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::List(self)),
        }
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Still one line: the errors joined, so the runtime quotes them all.
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        write!(f, "{} errors: {}", parts.len(), parts.join(" | "))
    }
}
