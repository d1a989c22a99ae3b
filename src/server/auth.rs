//! Bearer tokens and roles.
//!
//! Tokens live in `<data-dir>/auth.db`, a small SQLite file of its own (owner-only, WAL), not
//! in the ledger store: the `Store` trait stays about entries, and the same file works whether
//! the ledger is embedded or in PostgreSQL. Several servers over one ledger share the data
//! directory's auth.db (or a copy of it).
//!
//! A token is `al_` + 64 hex digits (256 random bits). Only its SHA-256 is stored: for a value
//! with that much entropy a fast hash is enough (nobody can enumerate 2^256 candidates), unlike
//! passwords. Presented tokens are hashed and compared in constant time. A token, or anything
//! from which it could be recovered, is never logged, stored or echoed.
//!
//! Roles: `service` may append; `auditor` may read, verify, export (and read metrics);
//! `admin` is everything an auditor may do plus token management. Every role may read
//! `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

pub const AUTH_DB: &str = "auth.db";
pub const TOKEN_PREFIX: &str = "al_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// May append events (POST /v1/events, POST /fhir/AuditEvent).
    Service,
    /// May read entries, verify, export.
    Auditor,
    /// An auditor that may also manage tokens.
    Admin,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Append,
    Read,
    /// Ask the block list (services at login, auditors).
    Consult,
    Manage,
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "service" => Some(Role::Service),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role model in one place. Admin inherits auditor; appending is the service role's
    /// alone, so a leaked auditor token cannot write into the ledger it audits.
    pub fn allows(self, p: Permission) -> bool {
        match p {
            Permission::Append => self == Role::Service,
            Permission::Read => matches!(self, Role::Auditor | Role::Admin),
            Permission::Manage => self == Role::Admin,
            Permission::Consult | Permission::Metrics => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a token named {0:?} is active already: revoke it first or pick another name")]
    NameTaken(String),
    #[error("token names are 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, and must not look like PHI")]
    BadName,
}

/// One token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: &'static str,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A token known to the server: its hash, name and role, and whether it was revoked.
#[derive(Debug, Clone)]
struct KnownToken {
    hash: [u8; 32],
    name: String,
    role: Role,
    revoked: bool,
}

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that was never issued (or is malformed).
    Unknown,
    /// A token that was revoked (its name is known).
    Revoked { name: String },
}

/// The token table in auth.db.
pub struct TokenStore {
    conn: Connection,
    path: PathBuf,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        // The name is written into the ledger's free-text detail: keep PHI-looking names out.
        && ledger::PhiScanner::global().find(name).is_none()
}

impl TokenStore {
    /// Opens (creating, owner-only) `<data_dir>/auth.db`.
    pub fn open(data_dir: &Path) -> Result<TokenStore, AuthError> {
        let path = data_dir.join(AUTH_DB);
        let io = |source| AuthError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Create the file with mode 0600 before SQLite opens it: SQLite gives its -wal and
        // -shm files the database file's permissions.
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let db = |source| AuthError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tokens (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 role TEXT NOT NULL CHECK (role IN ('service', 'auditor', 'admin')),
                 hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
                 created_at TEXT NOT NULL,
                 revoked_at TEXT
             );
             CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;",
        )
        .map_err(db)?;
        Ok(TokenStore { conn, path })
    }

    fn db(&self, source: rusqlite::Error) -> AuthError {
        AuthError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Creates a token; returns it (the only time it exists outside the caller's hands).
    pub fn create(&self, name: &str, role: Role) -> Result<String, AuthError> {
        if !valid_name(name) {
            return Err(AuthError::BadName);
        }
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.conn.execute(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), &token_hash(&token)[..], now],
        ) {
            Ok(_) => Ok(token),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(AuthError::NameTaken(name.to_owned()))
            }
            Err(e) => Err(self.db(e)),
        }
    }

    /// Revokes the active token called `name`; false when there is none.
    pub fn revoke(&self, name: &str) -> Result<bool, AuthError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let n = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, now],
            )
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    /// The role of the active token called `name`.
    pub fn active_role(&self, name: &str) -> Result<Option<Role>, AuthError> {
        let role: Option<String> = self
            .conn
            .query_row(
                "SELECT role FROM tokens WHERE name = ?1 AND revoked_at IS NULL",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(role.as_deref().and_then(Role::parse))
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, created_at, revoked_at FROM tokens ORDER BY id")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                let role: String = r.get(1)?;
                Ok(TokenInfo {
                    name: r.get(0)?,
                    role: Role::parse(&role).map(Role::as_str).unwrap_or("unknown"),
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    fn known(&self) -> Result<Vec<KnownToken>, AuthError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, name, role, revoked_at IS NOT NULL FROM tokens")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(0)?;
                let role: String = r.get(2)?;
                Ok((hash, r.get::<_, String>(1)?, role, r.get::<_, bool>(3)?))
            })
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, name, role, revoked) = row.map_err(|e| self.db(e))?;
            if let (Ok(hash), Some(role)) = (<[u8; 32]>::try_from(hash), Role::parse(&role)) {
                out.push(KnownToken {
                    hash,
                    name,
                    role,
                    revoked,
                });
            }
        }
        Ok(out)
    }

    /// Changes whenever another connection commits to the file (SQLite's `data_version`).
    fn data_version(&self) -> Result<i64, AuthError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.db(e))
    }
}

/// The server's view of the tokens: a snapshot in memory, reloaded when auth.db changes, so a
/// request costs one SHA-256 and a few comparisons, never a database query.
pub struct Authenticator {
    tokens: RwLock<Arc<Vec<KnownToken>>>,
    store: Mutex<TokenStore>,
    version: Mutex<i64>,
}

impl Authenticator {
    pub fn open(data_dir: &Path) -> Result<Authenticator, AuthError> {
        let store = TokenStore::open(data_dir)?;
        let tokens = store.known()?;
        let version = store.data_version()?;
        Ok(Authenticator {
            tokens: RwLock::new(Arc::new(tokens)),
            store: Mutex::new(store),
            version: Mutex::new(version),
        })
    }

    /// Reloads the snapshot if auth.db changed since the last look (blocking: call it from a
    /// blocking thread). Returns whether it reloaded.
    pub fn refresh(&self) -> Result<bool, AuthError> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let now = store.data_version()?;
        let mut seen = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let tokens = store.known()?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        *seen = now;
        Ok(true)
    }

    /// Active tokens known.
    pub fn active_count(&self) -> usize {
        self.snapshot().iter().filter(|t| !t.revoked).count()
    }

    fn snapshot(&self) -> Arc<Vec<KnownToken>> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Refusal> {
        let Some(token) = header.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        }) else {
            return Err(Refusal::Missing);
        };
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(Refusal::Unknown);
        }
        let presented = token_hash(token);
        // Constant-time comparison against every known token: the time taken does not depend
        // on how much of a hash matched.
        let mut found: Option<&KnownToken> = None;
        let tokens = self.snapshot();
        for t in tokens.iter() {
            if bool::from(t.hash.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        match found {
            Some(t) if t.revoked => Err(Refusal::Revoked {
                name: t.name.clone(),
            }),
            Some(t) => Ok(Principal {
                name: t.name.clone(),
                role: t.role,
            }),
            None => Err(Refusal::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_inherit_as_documented() {
        use Permission::*;
        assert!(Role::Service.allows(Append));
        assert!(!Role::Service.allows(Read) && !Role::Service.allows(Manage));
        assert!(Role::Auditor.allows(Read) && !Role::Auditor.allows(Append));
        assert!(!Role::Auditor.allows(Manage));
        assert!(Role::Admin.allows(Read) && Role::Admin.allows(Manage));
        assert!(!Role::Admin.allows(Append));
        assert!([Role::Service, Role::Auditor, Role::Admin]
            .iter()
            .all(|r| r.allows(Metrics) && r.allows(Consult)));
    }

    #[test]
    fn tokens_are_stored_hashed_checked_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let token = store.create("ehr-web", Role::Service).unwrap();
        assert!(token.starts_with("al_") && token.len() == 3 + 64);
        assert!(matches!(
            store.create("ehr-web", Role::Auditor),
            Err(AuthError::NameTaken(_))
        ));
        assert!(matches!(
            store.create("jane@example.org", Role::Auditor),
            Err(AuthError::BadName)
        ));
        let raw = std::fs::read(dir.path().join(AUTH_DB)).unwrap();
        let wal = std::fs::read(dir.path().join("auth.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(AUTH_DB))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let auth = Authenticator::open(dir.path()).unwrap();
        let header = format!("Bearer {token}");
        assert_eq!(
            auth.authenticate(Some(&header)),
            Ok(Principal {
                name: "ehr-web".into(),
                role: Role::Service
            })
        );
        assert_eq!(auth.authenticate(None), Err(Refusal::Missing));
        assert_eq!(auth.authenticate(Some("Basic abc")), Err(Refusal::Missing));
        let wrong = format!("Bearer al_{}", "0".repeat(64));
        assert_eq!(auth.authenticate(Some(&wrong)), Err(Refusal::Unknown));

        // Another process revokes; the server notices on its next refresh.
        let other = TokenStore::open(dir.path()).unwrap();
        assert!(other.revoke("ehr-web").unwrap());
        assert!(!other.revoke("ehr-web").unwrap());
        assert!(auth.refresh().unwrap());
        assert_eq!(
            auth.authenticate(Some(&header)),
            Err(Refusal::Revoked {
                name: "ehr-web".into()
            })
        );
        assert!(!auth.refresh().unwrap(), "nothing changed since");
        // The name is free again after revocation.
        other.create("ehr-web", Role::Service).unwrap();
        let list = other.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].revoked_at.is_some() && list[1].revoked_at.is_none());
    }
}
