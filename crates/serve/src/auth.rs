//! Bearer tokens with roles, read from a file of lines `name role token` (`#` starts a comment).
//! A presented token is compared with every known token through SHA-256 digests in constant time
//! (`subtle`), so neither its content nor its length shows in the time a check takes.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Result, ServeError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read threats, alerts, the baseline and metrics.
    Read,
    /// Also change the library (remove, roll back).
    Write,
}

/// Shortest token accepted: 16 characters (a guessable token is a configuration error).
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The known tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and roles only: never a token or its digest.
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role)))
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// No tokens: every request is anonymous.
    pub fn none() -> Self {
        Tokens::default()
    }

    /// Parses the tokens file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ServeError::Tokens {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, token] = fields[..] else {
                return Err(err(format!(
                    "expected `name role token`, found {} field(s)",
                    fields.len()
                )));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                other => return Err(err(format!("role must be read or write, found {other:?}"))),
            };
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(err(format!(
                    "token of {name:?} is shorter than {MIN_TOKEN_CHARS} characters"
                )));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(err(format!("token name {name:?} is given twice")));
            }
            let d = digest(token.as_bytes());
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&d))) {
                return Err(err(format!("the token of {name:?} is also another name's")));
            }
            entries.push(Entry {
                name: name.to_string(),
                role,
                digest: d,
            });
        }
        if entries.is_empty() {
            return Err(ServeError::Tokens {
                path: path.to_path_buf(),
                line: 0,
                message: "no token in the file".into(),
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads the tokens file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The name and role of `presented`, if it is a known token. Every entry is compared, whatever
    /// matched earlier.
    pub fn check(&self, presented: &str) -> Option<(String, Role)> {
        let d = digest(presented.as_bytes());
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let hit = bool::from(e.digest.ct_eq(&d));
            if hit && found.is_none() {
                found = Some(e);
            }
        }
        found.map(|e| (e.name.clone(), e.role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_check_and_refuse() {
        let p = Path::new("tokens");
        let t = Tokens::parse(
            "# SOC tokens\nsiem read aaaaaaaaaaaaaaaaaaaa\nanalyst write bbbbbbbbbbbbbbbbbbbb # on call\n",
            p,
        )
        .expect("valid");
        assert_eq!(
            t.check("aaaaaaaaaaaaaaaaaaaa"),
            Some(("siem".into(), Role::Read))
        );
        assert_eq!(
            t.check("bbbbbbbbbbbbbbbbbbbb"),
            Some(("analyst".into(), Role::Write))
        );
        assert_eq!(t.check("aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(t.check(""), None);
        assert!(!format!("{t:?}").contains("aaaa"));
        for (text, needle) in [
            ("siem read short\n", "shorter"),
            ("siem admin aaaaaaaaaaaaaaaaaaaa\n", "role"),
            ("siem read\n", "field"),
            (
                "a read aaaaaaaaaaaaaaaaaaaa\na write bbbbbbbbbbbbbbbbbbbb\n",
                "twice",
            ),
            (
                "a read aaaaaaaaaaaaaaaaaaaa\nb write aaaaaaaaaaaaaaaaaaaa\n",
                "another",
            ),
            ("# nothing\n", "no token"),
        ] {
            let e = Tokens::parse(text, p).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = Tokens::parse("x\nsiem read short\n", p).expect_err("line");
        assert!(e.to_string().starts_with("tokens:1:"), "{e}");
    }
}
