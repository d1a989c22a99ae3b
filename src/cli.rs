//! Command-line definition. Every command and flag has help text: `auditledger --help`,
//! `auditledger <command> --help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "auditledger",
    version,
    about = "A tamper-evident, hash-chained, append-only audit ledger for systems that handle PHI.",
    long_about = "A tamper-evident, hash-chained, append-only audit ledger for systems that handle PHI.\n\n\
Services append audit events (JSON); every identifier is pseudonymized with a keyed hash before it is \
stored, each entry is chained to the digest of the one before it, and `verify` recomputes every digest \
and link. Without --database-url the ledger lives in an embedded SQLite file in --data-dir.\n\n\
Start with `auditledger demo` to see a synthetic clinic day appended and verified.",
    after_help = "Exit status: 0 ok; 1 ledger damaged or input refused; 2 usage, I/O or store error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Directory holding the keys (keys/) and the embedded store: the ledger (ledger.db) and the
    /// projections' read models (projections.db).
    #[arg(
        long,
        global = true,
        env = "AUDITLEDGER_DATA_DIR",
        default_value = "./auditledger-data"
    )]
    pub data_dir: PathBuf,

    /// Ledger stream to work on; streams chain independently (e.g. one per tenant).
    #[arg(
        long,
        global = true,
        env = "AUDITLEDGER_STREAM",
        default_value = "default"
    )]
    pub stream: String,

    /// PostgreSQL to keep the ledger in (e.g. postgres://auditledger@db:5432/ehr); without it
    /// the embedded store in --data-dir is used. Keys still come from --data-dir or the
    /// environment. The password is never printed.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<store_postgres::DatabaseUrl>,

    /// PostgreSQL schema holding the ledger's tables (one database can hold several ledgers).
    #[arg(
        long,
        global = true,
        env = "AUDITLEDGER_DATABASE_SCHEMA",
        default_value = store_postgres::DEFAULT_SCHEMA,
        value_name = "SCHEMA"
    )]
    pub database_schema: String,

    /// Log filter (e.g. info, debug, auditledger=debug). Overrides RUST_LOG. Logs go to stderr
    /// and never carry raw identifiers or keys.
    #[arg(long, global = true, env = "AUDITLEDGER_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, the secret pseudonymization key (owner-only file) and the
    /// stream's genesis entry.
    #[command(
        long_about = "Create the data directory, the secret pseudonymization key and the stream's genesis entry.\n\n\
The key is written to <data-dir>/keys/pseudonym.key with owner-only permissions (0600). Keep a copy \
somewhere safe: without it nobody can pseudonymize an identifier to look it up, and pseudonyms made \
with another key will not match. Instead of the file, the key may come from the environment variable \
AUDITLEDGER_PSEUDONYM_KEY (64 hex digits). An existing key is never overwritten."
    )]
    Init,

    /// Create or upgrade the PostgreSQL schema (--database-url): tables, triggers, roles.
    #[command(long_about = crate::commands::migrate::LONG_ABOUT)]
    Migrate(crate::commands::migrate::MigrateArgs),

    /// Append events (JSON Lines) from stdin or a file.
    #[command(
        long_about = "Append audit events given as JSON Lines (one event object per line) from stdin or --file.\n\n\
Every identifier (actor.user_id, actor.ip, actor.session_id, resource.id, patient_id) is pseudonymized \
before it is stored. Without --chunk the whole input is one atomic request: if any line is invalid, \
every problem is listed and nothing is written. With --chunk N, each group of N lines is atomic and \
committed as it arrives (for pipes and very large imports); receipts then stream as entries commit."
    )]
    Append(AppendArgs),

    /// Verify the whole ledger: every digest, hash, link, sequence number and column.
    #[command(
        long_about = "Verify the ledger: recompute every payload digest and entry hash, check every link, the \
continuity of seq and every column stored beside the payload. Uses every core and constant memory; shows \
progress on a terminal. Names the first damaged entry and the kind of damage.\n\n\
With --export FILE, verifies an export file with no store at all.\n\n\
Exit status: 0 intact, 1 damaged, 2 usage or I/O error."
    )]
    Verify(VerifyArgs),

    /// Write the ledger to a file as a CBOR sequence (RFC 8742), verifiable offline.
    Export(ExportArgs),

    /// Print entries as JSON (pseudonyms, never raw identifiers).
    Show(ShowArgs),

    /// Print the newest entries as JSON Lines.
    Tail(TailArgs),

    /// Generate a realistic synthetic clinic day, append it, verify it, and explain what happened.
    #[command(
        long_about = "Generate a realistic synthetic day of a clinic (logins, failed logins including a brute-force \
burst, PHI reads and updates, exports, a role change), append it through concurrent appenders, verify \
the ledger and print what was done. Initializes --data-dir first when it has no key."
    )]
    Demo(DemoArgs),

    /// Keys: `key public` prints the checkpoint verifier key to give auditors.
    Key(crate::commands::key::KeyArgs),

    /// Sign the current tree head (size, Merkle root, head hash) as a C2SP checkpoint, store it
    /// in the ledger and print it (or --out FILE). Keep copies outside the database: only they
    /// can show that the ledger was truncated or rewritten later.
    Checkpoint(crate::commands::checkpoint::CheckpointArgs),

    /// Print an RFC 9162 inclusion or consistency proof as JSON.
    Prove(crate::commands::prove::ProveArgs),

    /// Check a proof with only the verifier key, the checkpoint(s) and the proof; opens no
    /// store. Exit status: 0 valid, 1 refused.
    CheckProof(crate::commands::check_proof::CheckProofArgs),

    /// Run the HTTP service: services append events (JSON or FHIR AuditEvent), auditors read,
    /// verify and export; every route but /healthz and /readyz needs a bearer token.
    #[command(
        long_about = "Run the HTTP service (docs/HTTP.md): POST /v1/events, POST /fhir/AuditEvent, GET /v1/entries, \
GET /v1/entries/{seq}, GET /v1/head, POST /v1/verify, GET /v1/export, GET /v1/tokens, /metrics, /healthz, /readyz.\n\n\
Every route but /healthz and /readyz needs `Authorization: Bearer <token>` (see `auditledger token`). Settings \
come from flags, then the environment, then --config FILE (TOML, same names with '_'), then the defaults below. \
The bound address is printed on stdout. SIGTERM or SIGINT: stop accepting, finish in-flight requests, commit and \
acknowledge what the writer holds, exit 0. Plain HTTP: put TLS in a reverse proxy in front (docs/HTTP.md)."
    )]
    Serve(crate::commands::serve::ServeArgs),

    /// API tokens for `serve`: create (printed once), revoke, list. Stored hashed in
    /// <data-dir>/auth.db; creation and revocation are recorded in the ledger.
    Token(crate::commands::token::TokenArgs),

    /// Run a projection (a read model of the verified stream) from its saved position: catch
    /// up, --rebuild from the first entry, or --follow the head. `serve` runs them continuously.
    #[command(
        long_about = "Run a projection over the verified stream from its saved position.\n\n\
Every entry is verified (digest, hash, link, seq, columns) before it is applied; the read-model changes, \
the projection's state and its new position are saved in one transaction, so a projection stopped at any \
moment resumes without skipping or double-counting. `security` detects brute force, password spraying, \
account attacks, refused PHI requests, hijacked sessions, bulk exports, configuration changes and \
after-hours PHI access (docs/SECURITY.md); each detection is appended to the ledger as a `security_event` \
entry. `phi-access` keeps who accessed which patient's PHI and the per-day and per-user-day aggregates \
the reports use (docs/PHI-ACCESS.md); it appends nothing. Stops at the first damaged entry with exit status 1."
    )]
    Project(crate::commands::project::ProjectArgs),

    /// Security events and the block list: `security events`, `security blocklist`,
    /// `security check --ip`, `security unblock --ip --reason` (recorded in the ledger).
    Security(crate::commands::security::SecurityArgs),

    /// Reports for privacy officers and auditors: `report disclosures --patient ID` (the
    /// accounting of disclosures, recorded in the ledger) and `report hipaa --from --to`
    /// (the compliance report, json/csv/html). Exit status 1 when their evidence does not
    /// verify.
    Report(crate::commands::report::ReportArgs),

    /// Retention: `retention hold add|release|list` (legal holds, recorded in the ledger),
    /// `retention check` (for cron: exit 0 compliant, 1 violation; recorded in the ledger) and
    /// `retention plan` (what is past its horizon). docs/RETENTION.md.
    Retention(crate::commands::retention::RetentionArgs),

    /// Write the entries recorded before a date to an archive file: a CBOR sequence carrying
    /// the signed checkpoint of exactly those entries, verifiable offline with
    /// `verify --export FILE --public-key KEY`. Changes nothing in the ledger but a record of
    /// the export and the stored checkpoint.
    Archive(crate::commands::retention::ArchiveArgs),

    /// Purge payloads only (seq, times, digests and hashes stay, so the chain still verifies),
    /// and only of entries in the named archive that are past their horizon and under no legal
    /// hold, after appending an authorization entry naming the archive's digest and the range.
    /// A refused purge is recorded too. Exit status 1 when refused.
    Purge(crate::commands::retention::PurgeArgs),
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Read events from this file instead of stdin.
    #[arg(long, short)]
    pub file: Option<PathBuf>,

    /// Print one receipt (seq, entry_hash, recorded_at) per event on stdout, as JSON Lines.
    #[arg(long)]
    pub receipts: bool,

    /// Commit every N lines as their own atomic request, as they arrive.
    #[arg(long, value_name = "N")]
    pub chunk: Option<usize>,

    /// Idempotency key: re-running the same append with the same key returns the original
    /// receipts instead of writing twice (event i of the input is keyed by KEY and i).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// What to do with free text (detail, user_agent, request.path) that looks like PHI.
    #[arg(long, value_enum, default_value_t = PhiPolicyArg::Reject)]
    pub phi_policy: PhiPolicyArg,

    /// The input comes from the legacy system: identifiers already hold its unkeyed SHA-256
    /// hex and are stored as `sha256:<hex>` pseudonyms.
    #[arg(long)]
    pub legacy_hashed: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PhiPolicyArg {
    /// Refuse the event, naming the field.
    Reject,
    /// Replace each PHI-looking match with [REDACTED:<kind>].
    Redact,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Print one JSON object (ok, entries, head_seq, head_hash, first_bad_seq, problem, detail).
    #[arg(long)]
    pub json: bool,

    /// Verify this export file instead of the store (no store is opened).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// A signed checkpoint the ledger must extend (repeatable): its signature is checked first,
    /// then a ledger shorter than it is reported `truncated`, another tree `rewritten`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,

    /// Verifier key file (`auditledger key public`) to check checkpoints with, instead of the
    /// key derived from the data directory's signing key.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,

    /// Checkpoint origin [default: auditledger/<stream>].
    #[arg(long, env = "AUDITLEDGER_ORIGIN")]
    pub origin: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output file ('-' for stdout). An existing file is not overwritten.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// First seq to print.
    pub seq: u64,

    /// How many entries to print from SEQ on.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: usize,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the newest entries to print.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub count: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events in the synthetic day.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,

    /// Concurrent appenders (the writer group-commits what they send).
    #[arg(long, default_value_t = 16)]
    pub appenders: usize,

    /// Seed of the generator (same seed, same day).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's arguments are consistent (no id used twice across global and local
    /// options, groups name real arguments): clap checks it here instead of panicking at run time.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
