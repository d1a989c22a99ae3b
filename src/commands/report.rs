//! `auditledger report`: the accounting of disclosures for one patient and the HIPAA
//! compliance report for a period (docs/PHI-ACCESS.md).
//!
//! Both first bring the `phi-access` projection up to the head (it appends nothing), so the
//! report covers every entry (the compliance report the `retention` projection too); both exit
//! 1 when the evidence they rest on does not verify, and say so in the report itself.

use std::io::{IsTerminal, Read as _};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{Datelike, NaiveDate};
use clap::{Args, Subcommand, ValueEnum};
use ledger::projection::{ProjectionError, Runner};
use ledger::{Clock as _, SystemClock, Timestamp};
use phi_access::projection::PhiAccessProjection;
use phi_access::report::{self as render, DisclosureReport, HipaaReport};
use phi_access::{AnalyticsConfig, SiteCalendar};
use retention::RetentionConfig;

use crate::analytics::AnalyticsArgs;
use crate::commands::retention::RetentionConfigArgs;
use crate::commands::verify::progress_bar;
use crate::context::Context;
use crate::recorder::Recorder;
use crate::reports::{self, DisclosureQuery, Sources};
use crate::{EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for the terminal (disclosures only).
    Text,
    Json,
    /// One CSV file (docs/PHI-ACCESS.md describes the columns).
    Csv,
    /// One self-contained HTML file (no external resources; prints cleanly).
    Html,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Verifier key (the `auditledger key public` text) the stored checkpoints must be signed
    /// with [default: derived from the data directory's signing key].
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,

    /// Report on the read model as it is, without first bringing the phi-access projection up
    /// to the head.
    #[arg(long)]
    pub no_catch_up: bool,

    #[command(flatten)]
    pub analytics: AnalyticsArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The accounting of disclosures (45 CFR 164.528) for one patient: every access to their
    /// PHI in the period, with its evidence. The request is itself recorded in the ledger.
    Disclosures {
        /// The patient's raw identifier, as the EHR knows it; `-` reads it from standard input
        /// (keeps it out of shell history and process listings). It is pseudonymized, and
        /// never stored, printed or logged.
        #[arg(long, value_name = "ID")]
        patient: String,
        /// Start (RFC 3339 or YYYY-MM-DD) [default: six years before now].
        #[arg(long)]
        from: Option<String>,
        /// End, exclusive (RFC 3339 or YYYY-MM-DD) [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Also verify every entry in the period's seq span, not only the ones cited (reads
        /// the whole span; slower).
        #[arg(long)]
        verify_range: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// The HIPAA compliance report for a period of site days: integrity, access summary,
    /// security events, PHI access and unusual patterns, system changes, retention (policy,
    /// legal holds, retention checks, purges, coverage gaps).
    Hipaa {
        /// First day (YYYY-MM-DD, site time) [default: the first day of last month].
        #[arg(long)]
        from: Option<NaiveDate>,
        /// The day after the last day (exclusive; YYYY-MM-DD) [default: the first day of this
        /// month].
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long, value_enum, default_value_t = Format::Html)]
        format: Format,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        retention: RetentionConfigArgs,
    },
}

pub async fn run(ctx: &Context, args: ReportArgs) -> anyhow::Result<u8> {
    match args.command {
        ReportCommand::Disclosures {
            patient,
            from,
            to,
            verify_range,
            format,
            common,
        } => {
            let now = SystemClock.now();
            let from = match from {
                Some(s) => parse_instant(&s)?,
                None => reports::six_years_before(now),
            };
            let to = match to {
                Some(s) => parse_instant(&s)?,
                None => Timestamp(now.0 + 1),
            };
            if from >= to {
                anyhow::bail!("--from must be before --to");
            }
            let patient = read_patient(patient)?;
            disclosures(ctx, &common, &patient, from, to, verify_range, format).await
        }
        ReportCommand::Hipaa {
            from,
            to,
            format,
            common,
            retention,
        } => {
            if format == Format::Text {
                anyhow::bail!("the compliance report is json, csv or html");
            }
            let config = common.analytics.load(&ctx.global.data_dir)?;
            let retention = retention.load(&ctx.global.data_dir)?;
            let today = SiteCalendar::new(&config).date(SystemClock.now());
            let this_month = today.with_day(1).expect("day 1 exists");
            let from = from.unwrap_or_else(|| {
                (this_month - chrono::Duration::days(1))
                    .with_day(1)
                    .expect("day 1 exists")
            });
            let to = to.unwrap_or(this_month);
            if from >= to {
                anyhow::bail!("--from must be before --to (which is exclusive)");
            }
            hipaa(ctx, &common, config, &retention, from, to, format).await
        }
    }
}

/// RFC 3339, or a date (its start, UTC).
fn parse_instant(s: &str) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let date: NaiveDate = s
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let start = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    Ok(Timestamp(start.timestamp_micros()))
}

fn read_patient(arg: String) -> anyhow::Result<String> {
    let id = if arg == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("patient id: ");
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the patient id from standard input")?;
        s.trim().to_owned()
    } else {
        arg.trim().to_owned()
    };
    if id.is_empty() || id.len() > ledger::event::MAX_ID_LEN {
        anyhow::bail!(
            "the patient id must be 1 to {} characters",
            ledger::event::MAX_ID_LEN
        );
    }
    Ok(id)
}

/// Opens the phi-access projection at its saved position (it appends nothing, so any writer
/// does).
async fn open_phi(
    recorder: &Recorder,
    config: &AnalyticsConfig,
) -> anyhow::Result<Runner<PhiAccessProjection>> {
    Runner::open(
        recorder.store(),
        recorder.writer().clone(),
        PhiAccessProjection::new(config.clone()),
    )
    .await
    .context("cannot open the phi-access projection")
}

/// Brings the phi-access projection (opened by [`open_phi`]) up to the head.
async fn catch_up(mut runner: Runner<PhiAccessProjection>, show: bool) -> anyhow::Result<()> {
    let bar = progress_bar(show, None, "projecting phi-access");
    let b = bar.clone();
    let done = runner
        .catch_up(move |position, head| {
            b.set_length(head);
            b.set_position(position);
        })
        .await;
    bar.finish_and_clear();
    match done {
        // Another runner (a server) is at it: it is current or about to be.
        Ok(_) | Err(ProjectionError::Moved(_)) => Ok(()),
        Err(ProjectionError::Damaged {
            seq,
            problem,
            detail,
        }) => {
            eprintln!(
                "warning: the phi-access projection stopped before entry {seq} ({}): {detail}; the report covers the entries before it, and says whether they verify",
                problem.as_str()
            );
            Ok(())
        }
        Err(e) => Err(e).context("cannot bring the phi-access projection up to date"),
    }
}

/// Brings the retention projection up to the head, for the compliance report's retention
/// section.
async fn catch_up_retention(recorder: &Recorder, config: &RetentionConfig) -> anyhow::Result<()> {
    let bar = progress_bar(true, None, "projecting retention");
    let b = bar.clone();
    let done = reports::catch_up_retention(
        recorder.store(),
        recorder.writer().clone(),
        config,
        move |position, head| {
            b.set_length(head);
            b.set_position(position);
        },
    )
    .await;
    bar.finish_and_clear();
    if let Some(warning) = done.context("cannot bring the retention projection up to date")? {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn checkpoint_key(ctx: &Context, common: &Common) -> Option<ledger::checkpoint::NoteVerifier> {
    use crate::commands::checkpoint::{origin, trusted_key};
    match trusted_key(ctx, common.public_key.as_deref(), &origin(ctx, None)) {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("warning: no checkpoint key ({e:#}): the report cannot anchor its evidence to a signed checkpoint");
            None
        }
    }
}

fn emit(out: Option<&PathBuf>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

async fn disclosures(
    ctx: &Context,
    common: &Common,
    patient: &str,
    from: Timestamp,
    to: Timestamp,
    verify_range: bool,
    format: Format,
) -> anyhow::Result<u8> {
    let config = common.analytics.load(&ctx.global.data_dir)?;
    let pseudonymizer = ctx.pseudonymizer()?;
    let key = checkpoint_key(ctx, common);
    ctx.open_existing().await?;
    let recorder = Recorder::open(ctx).await?;
    let q = DisclosureQuery {
        raw_patient: patient,
        from,
        to,
        verify_range,
    };
    // Opened first: a projection that cannot be resumed (another configuration, another
    // format) fails the request before anything is recorded.
    let runner = if common.no_catch_up {
        None
    } else {
        Some(open_phi(&recorder, &config).await?)
    };
    // Asking is itself an audit-log read, recorded before anything is shown.
    let receipt = recorder
        .record_body(&reports::disclosure_request_event(
            Recorder::operator("auditor"),
            &q,
        ))
        .await?;
    if let Some(runner) = runner {
        catch_up(runner, format == Format::Text || common.out.is_some()).await?;
    }
    let store = recorder.store();
    let src = Sources {
        store: store.as_ref(),
        stream: &ctx.stream,
        config: &config,
        checkpoint_key: key.as_ref(),
    };
    let mut report: DisclosureReport = reports::disclosures(&src, &pseudonymizer, &q).await?;
    report.request_seq = Some(receipt.seq);
    report.requested_by = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| pseudonymizer.pseudonymize(&u).to_string());
    recorder.close().await?;
    let text = match format {
        Format::Text => render::disclosures_text(&report),
        Format::Json => render::disclosures_json(&report),
        Format::Csv => render::disclosures_csv(&report),
        Format::Html => render::disclosures_html(&report),
    };
    emit(common.out.as_ref(), &text)?;
    if !report.integrity.ok {
        eprintln!("{}", report.integrity.statement);
    }
    Ok(if report.integrity.ok {
        EXIT_OK
    } else {
        EXIT_DAMAGED
    })
}

async fn hipaa(
    ctx: &Context,
    common: &Common,
    config: AnalyticsConfig,
    retention: &RetentionConfig,
    from: NaiveDate,
    to: NaiveDate,
    format: Format,
) -> anyhow::Result<u8> {
    let key = checkpoint_key(ctx, common);
    let store = ctx.open_existing().await?;
    if !common.no_catch_up {
        let recorder = Recorder::open(ctx).await?;
        catch_up(open_phi(&recorder, &config).await?, true).await?;
        catch_up_retention(&recorder, retention).await?;
        recorder.close().await?;
    }
    let src = Sources {
        store: store.as_ref(),
        stream: &ctx.stream,
        config: &config,
        checkpoint_key: key.as_ref(),
    };
    let bar = progress_bar(true, None, "verifying the period");
    let b = bar.clone();
    let report: HipaaReport =
        reports::hipaa_with_retention(&src, Some(retention), from, to, move |n| b.set_position(n))
            .await?;
    bar.finish_and_clear();
    let text = match format {
        Format::Json => render::hipaa_json(&report),
        Format::Csv => render::hipaa_csv(&report),
        Format::Html | Format::Text => render::hipaa_html(&report),
    };
    emit(common.out.as_ref(), &text)?;
    if !report.integrity.ok {
        eprintln!("{}", report.integrity.statement);
        return Ok(EXIT_DAMAGED);
    }
    Ok(EXIT_OK)
}
