//! `auditledger append`: JSON Lines in, receipts out.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use anyhow::Context as _;
use futures::stream::{FuturesOrdered, StreamExt};
use ledger::event::{EventError, FieldError, ParseOptions};
use ledger::{
    GroupCommitWriter, IdentifierMode, Ingest, PhiPolicy, PreparedEntry, Receipt, SystemClock,
    WriterConfig,
};
use serde_json::Value;

use crate::cli::{AppendArgs, PhiPolicyArg};
use crate::context::Context;
use crate::{EXIT_DAMAGED, EXIT_OK};

/// Most chunk requests in flight at once with `--chunk` (the writer batches them).
const MAX_IN_FLIGHT: usize = 64;

pub async fn run(ctx: &Context, args: AppendArgs) -> anyhow::Result<u8> {
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let mut ingest = Ingest::new(ctx.pseudonymizer()?);
    ingest.parse = ParseOptions {
        phi_policy: match args.phi_policy {
            PhiPolicyArg::Reject => PhiPolicy::Reject,
            PhiPolicyArg::Redact => PhiPolicy::Redact,
        },
        ..ParseOptions::default()
    };
    if args.legacy_hashed {
        ingest.mode = IdentifierMode::LegacySha256;
    }
    let store = ctx.open_store().await?;
    let (writer, task) = GroupCommitWriter::start(
        store,
        ctx.stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    ingest.alg = writer.hash_alg();
    let ingest = Arc::new(ingest);

    let outcome = match args.chunk {
        None => append_all(&writer, &ingest, input, &args).await,
        Some(n) => append_chunked(&writer, &ingest, input, &args, n.max(1)).await,
    };
    drop(writer);
    task.await.context("writer task failed")?;
    let (written, first, last, refused) = outcome?;
    match (first, last) {
        _ if refused && written == 0 => {}
        (Some(a), Some(b)) => eprintln!(
            "appended {written} events to stream {}: seq {a}..={b}",
            ctx.stream
        ),
        _ => eprintln!("appended {written} events to stream {}", ctx.stream),
    }
    Ok(if refused { EXIT_DAMAGED } else { EXIT_OK })
}

/// (events acknowledged, first seq, last seq, whether input was refused)
type Outcome = anyhow::Result<(u64, Option<u64>, Option<u64>, bool)>;

/// Parses each line as JSON, then validates and prepares every event. Either all are valid,
/// or every problem of every line is returned (syntax errors and rule violations alike), each
/// numbered by its position in `lines`.
fn prepare_lines(
    ingest: &Ingest,
    lines: &[(usize, String)],
    idem: Option<&str>,
    first_index: usize,
) -> Result<Vec<PreparedEntry>, Vec<EventError>> {
    let mut values = Vec::with_capacity(lines.len());
    let mut syntax = Vec::new();
    for (i, (_, line)) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => values.push(v),
            Err(e) => {
                values.push(Value::Null);
                syntax.push(EventError {
                    index: Some(i),
                    errors: vec![FieldError {
                        field: "$".into(),
                        rule: format!(
                            "must be one JSON object per line (column {}: {})",
                            e.column(),
                            category(&e)
                        ),
                    }],
                });
            }
        }
    }
    match ingest.prepare_batch(&values, idem, first_index) {
        Ok(prepared) if syntax.is_empty() => Ok(prepared),
        Ok(_) => Err(syntax),
        Err(invalid) => {
            // A line that is not JSON was validated as `null`: keep only its syntax error.
            let unparsable: Vec<Option<usize>> = syntax.iter().map(|s| s.index).collect();
            let mut all: Vec<EventError> = invalid
                .into_iter()
                .map(|mut e| {
                    e.index = e.index.map(|i| i - first_index);
                    e
                })
                .filter(|e| !unparsable.contains(&e.index))
                .chain(syntax)
                .collect();
            all.sort_by_key(|e| e.index);
            Err(all)
        }
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end of line",
    }
}

fn report_refusal(lines: &[(usize, String)], errors: &[EventError]) {
    for e in errors {
        let line = e
            .index
            .and_then(|i| lines.get(i))
            .map(|(n, _)| *n)
            .unwrap_or(0);
        for f in &e.errors {
            eprintln!("line {line}: {}: {}", f.field, f.rule);
        }
    }
}

/// Reads up to `max` non-blank lines, numbering them from `line_no`.
fn read_lines(
    input: &mut dyn BufRead,
    max: usize,
    line_no: &mut usize,
) -> anyhow::Result<Vec<(usize, String)>> {
    let mut out = Vec::new();
    let mut buf = String::new();
    while out.len() < max {
        buf.clear();
        if input.read_line(&mut buf).context("cannot read input")? == 0 {
            break;
        }
        *line_no += 1;
        let line = buf.trim();
        if !line.is_empty() {
            out.push((*line_no, line.to_owned()));
        }
    }
    Ok(out)
}

fn print_receipts(receipts: &[Receipt]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for r in receipts {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The whole input as one atomic request.
async fn append_all(
    writer: &GroupCommitWriter,
    ingest: &Ingest,
    mut input: Box<dyn BufRead + Send>,
    args: &AppendArgs,
) -> Outcome {
    let mut line_no = 0;
    let lines = read_lines(input.as_mut(), usize::MAX, &mut line_no)?;
    if lines.is_empty() {
        return Ok((0, None, None, false));
    }
    match prepare_lines(ingest, &lines, args.idempotency_key.as_deref(), 0) {
        Ok(prepared) => {
            let receipts = writer.append(prepared).await?;
            if args.receipts {
                print_receipts(&receipts)?;
            }
            Ok((
                receipts.len() as u64,
                receipts.first().map(|r| r.seq),
                receipts.last().map(|r| r.seq),
                false,
            ))
        }
        Err(errors) => {
            report_refusal(&lines, &errors);
            eprintln!(
                "refused: {} of {} events are invalid; nothing was written",
                errors.len(),
                lines.len()
            );
            Ok((0, None, None, true))
        }
    }
}

/// Every `chunk` lines as their own atomic request, committed as they arrive; receipts are
/// printed in input order as soon as they are acknowledged.
async fn append_chunked(
    writer: &GroupCommitWriter,
    ingest: &Arc<Ingest>,
    mut input: Box<dyn BufRead + Send>,
    args: &AppendArgs,
    chunk: usize,
) -> Outcome {
    let mut line_no = 0;
    let mut index = 0usize;
    let mut in_flight = FuturesOrdered::new();
    let mut tally = Tally::default();
    let mut refused = false;
    loop {
        let lines = read_lines(input.as_mut(), chunk, &mut line_no)?;
        if lines.is_empty() {
            break;
        }
        let prepared = match prepare_lines(ingest, &lines, args.idempotency_key.as_deref(), index) {
            Ok(p) => p,
            Err(errors) => {
                report_refusal(&lines, &errors);
                eprintln!(
                    "refused the chunk of lines {}..={}; chunks before it are committed, nothing after it was read",
                    lines[0].0,
                    lines[lines.len() - 1].0
                );
                refused = true;
                break;
            }
        };
        index += prepared.len();
        let w = writer.clone();
        in_flight.push_back(async move { w.append(prepared).await });
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(r) = in_flight.next().await {
                tally.record(r?, args.receipts)?;
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        tally.record(r?, args.receipts)?;
    }
    Ok((tally.written, tally.first, tally.last, refused))
}

#[derive(Default)]
struct Tally {
    written: u64,
    first: Option<u64>,
    last: Option<u64>,
}

impl Tally {
    fn record(&mut self, receipts: Vec<Receipt>, print: bool) -> anyhow::Result<()> {
        if print {
            print_receipts(&receipts)?;
        }
        self.written += receipts.len() as u64;
        self.first = self.first.or(receipts.first().map(|r| r.seq));
        self.last = receipts.last().map(|r| r.seq).or(self.last);
        Ok(())
    }
}
