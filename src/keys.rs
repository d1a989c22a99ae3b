//! Secret keys on disk: `<data-dir>/keys/pseudonym.key`, 64 hex digits, mode 0600 in a 0700
//! directory, or the `AUDITLEDGER_PSEUDONYM_KEY` environment variable. Key material is never
//! printed or logged; only its key id is.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ledger::PseudonymKey;

pub const PSEUDONYM_KEY_ENV: &str = "AUDITLEDGER_PSEUDONYM_KEY";

pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

pub fn pseudonym_key_path(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("pseudonym.key")
}

/// Where the key came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File(PathBuf),
}

/// Loads the pseudonymization key: the environment first, then the key file.
pub fn load_pseudonym_key(data_dir: &Path) -> anyhow::Result<(PseudonymKey, KeySource)> {
    if let Ok(text) = std::env::var(PSEUDONYM_KEY_ENV) {
        let key = PseudonymKey::from_hex(&text)
            .with_context(|| format!("{PSEUDONYM_KEY_ENV} is not a valid key"))?;
        return Ok((key, KeySource::Environment));
    }
    let path = pseudonym_key_path(data_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no pseudonymization key: {} does not exist and {PSEUDONYM_KEY_ENV} is not set; run `auditledger init` first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    check_owner_only(&path)?;
    let key = PseudonymKey::from_hex(&text)
        .with_context(|| format!("{} does not hold a valid key", path.display()))?;
    Ok((key, KeySource::File(path)))
}

/// Creates a new key file; refuses to overwrite one.
pub fn create_pseudonym_key(data_dir: &Path) -> anyhow::Result<PseudonymKey> {
    let dir = keys_dir(data_dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(&dir, 0o700)?;
    let path = pseudonym_key_path(data_dir);
    let key = PseudonymKey::generate();
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// A key readable by others is a leak waiting to happen: refuse it.
fn check_owner_only(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(())
}

/// The checkpoint signing key: `<data-dir>/keys/signing.key` (64 hex digits: the Ed25519 seed,
/// mode 0600) or `AUDITLEDGER_SIGNING_KEY`. Only the derived verifier key is ever printed.
pub const SIGNING_KEY_ENV: &str = "AUDITLEDGER_SIGNING_KEY";

pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("signing.key")
}

fn parse_seed(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Loads the signing seed: the environment first, then the key file.
pub fn load_signing_seed(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(text) = std::env::var(SIGNING_KEY_ENV) {
        return parse_seed(&text)
            .with_context(|| format!("{SIGNING_KEY_ENV} is not 64 hex digits"));
    }
    let path = signing_key_path(data_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no checkpoint signing key: {} does not exist and {SIGNING_KEY_ENV} is not set; run `auditledger init` first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    check_owner_only(&path)?;
    parse_seed(&text).with_context(|| format!("{} does not hold 64 hex digits", path.display()))
}

/// Creates a new signing key file from the OS random source; refuses to overwrite one.
pub fn create_signing_key(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use rand::RngCore;
    let dir = keys_dir(data_dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(&dir, 0o700)?;
    let path = signing_key_path(data_dir);
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    writeln!(file, "{}", hex::encode(seed))
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
