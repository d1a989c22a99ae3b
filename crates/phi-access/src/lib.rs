//! PHI-access analytics over the audit stream: who accessed which patient's PHI, when and how;
//! per-day and per-user-day aggregates; unusual access patterns against a user's own baseline
//! and their role's peers; the HIPAA accounting of disclosures for one patient; and the
//! compliance report (JSON, CSV, self-contained HTML).
//!
//! - [`config`]: what counts as PHI access, the site's calendar, every threshold (TOML).
//! - [`model`]: the values the read model keeps and the reports are built from.
//! - [`projection`]: the `phi-access` projection on the ledger's runner.
//! - [`read`]: index reads of the read model (one patient's years, one user's month, days).
//! - [`patterns`]: the unusual-pattern statistics, pure and explainable.
//! - [`report`]: the compliance report and the disclosures report, and their renderings.

pub mod config;
pub mod model;
pub mod patterns;
pub mod projection;
pub mod read;
pub mod report;

pub use config::{AnalyticsConfig, ConfigError};
pub use model::{Access, Change, DayTotals, SiteCalendar, UserDay};
pub use projection::PhiAccessProjection;
