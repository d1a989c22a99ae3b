//! The PostgreSQL schema that holds one ledger, and describing a connection without its
//! password.

use std::fmt;

use tokio_postgres::config::Host;

use crate::error::PostgresError;

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "auditledger";

/// A schema name that can be written into SQL as it is: 1-63 characters of `[a-z0-9_]`,
/// starting with a letter or `_`, not `pg_` (reserved by PostgreSQL). Restricting the
/// alphabet rather than quoting keeps every statement readable and rules out injection, since
/// table names cannot be bind parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    pub fn new(name: &str) -> Result<SchemaName, PostgresError> {
        let mut chars = name.chars();
        let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= 63 && !name.starts_with("pg_") {
            Ok(SchemaName(name.to_owned()))
        } else {
            Err(PostgresError::InvalidSchema(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        SchemaName(DEFAULT_SCHEMA.to_owned())
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `postgres://user@host:port/dbname`, rebuilt from the parsed configuration so a password
/// (in the URL or in `password=`) can never appear in logs, errors or `describe()`.
pub fn describe_config(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() { "" } else { "@" };
    format!("postgres://{user}{at}{}/{db}", hosts.join(","))
}

/// [`describe_config`] of a URL or key=value string; a string that does not parse is
/// described as unparsable rather than echoed (it may hold a password).
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => describe_config(&c),
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

/// A database URL (or key=value string) that parsed, and whose `Debug` and `Display` show it
/// without its password: the command line holds it in a struct that derives `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = PostgresError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<tokio_postgres::Config>()
            .map_err(|e| PostgresError::InvalidUrl(e.to_string()))?;
        Ok(DatabaseUrl(s.to_owned()))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_url(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", describe_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for good in ["auditledger", "_x", "t_42_abc", &"a".repeat(63)] {
            assert!(SchemaName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Upper",
            "1abc",
            "a-b",
            "a b",
            "pg_x",
            "x;drop",
            &"a".repeat(64),
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_never_described() {
        let d = describe_url("postgres://app:s3cret@db.example:6432/ledger?sslmode=disable");
        assert_eq!(d, "postgres://app@db.example:6432/ledger");
        let d = describe_url("host=db user=app password=s3cret dbname=ledger");
        assert_eq!(d, "postgres://app@db:5432/ledger");
        assert!(!describe_url("postgres://app:s3cret@/").contains("s3cret"));
        assert_eq!(
            describe_url("not a url s3cret://"),
            "<unparsable database URL>"
        );
        let url: DatabaseUrl = "postgres://app:s3cret@db/ledger".parse().unwrap();
        assert!(!format!("{url} {url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "postgres://app:s3cret@db/ledger");
    }
}
