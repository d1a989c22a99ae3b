//! Retention over the audit stream: how long entries must be kept, what legal holds keep
//! longer, whether the ledger still holds everything it must (the retention check), and what
//! may be let go (the purge plan).
//!
//! Pure logic is apart from I/O: [`config`], [`holds`], [`check`] and [`plan`] take plain
//! values and are tested without a store; [`projection`] runs on the ledger's projection
//! runner and [`read`] reads what it keeps. The binary does the rest (verification, appending
//! the check's entry, archive and purge); docs/RETENTION.md explains it for people.
//!
//! - [`config`]: the policy (default horizon, longer horizons per rule) and coverage settings.
//! - [`holds`]: legal holds and what each covers.
//! - [`projection`]: the `retention` projection: holds, releases, coverage gaps, sources.
//! - [`read`]: reads of that read model through the `Store` trait.
//! - [`check`]: the retention check: a verification report, holds and coverage in, verdict out.
//! - [`plan`]: what is past its horizon and under no hold, as `seq` ranges per rule.
//! - [`archive`]: archive files (the first entries with their signed checkpoint), written
//!   from a verifying pass, and opened (hashed and verified) for a purge.
//! - [`ops`]: the operations commands run: holds, the check, the plan, the purge.
//! - [`report`]: the retention status a compliance report shows (policy, holds, checks,
//!   purges, gaps in a period).

pub mod archive;
pub mod check;
pub mod config;
pub mod holds;
pub mod ops;
pub mod plan;
pub mod projection;
pub mod read;
pub mod report;
mod ts;

pub use check::{
    evaluate, CheckInput, CheckReport, CoverageGap, PurgeSummary, Violation, ViolationKind,
};
pub use config::{
    expires_at, horizon_cutoff, ConfigError, CoverageConfig, Policy, RetentionConfig, Rule,
    RuleRef, DEFAULT_RULE, FEDERAL_FLOOR_YEARS,
};
pub use holds::{Hold, HoldSet, Release};
pub use plan::{HeldCount, Plan, Planner, RulePlan};
pub use projection::{Gap, OrphanRelease, RetentionProjection, SourceRow};
