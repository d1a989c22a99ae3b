//! `auditledger export`: the ledger as a CBOR sequence.

use std::io::{BufWriter, Write};

use anyhow::Context as _;
use ledger::export::ExportWriter;

use crate::cli::ExportArgs;
use crate::commands::verify::progress_bar;
use crate::context::Context;
use crate::EXIT_OK;

pub async fn run(ctx: &Context, args: ExportArgs) -> anyhow::Result<u8> {
    let store = ctx.open_existing().await?;
    let head = store
        .head(&ctx.stream)
        .await?
        .with_context(|| format!("stream {} has no entries", ctx.stream))?;
    let to_stdout = args.out.as_os_str() == "-";
    let out: Box<dyn Write + Send> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&args.out)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing file is not overwritten)",
                        args.out.display()
                    )
                })?,
        )
    };
    let bar = progress_bar(!to_stdout, Some(head.seq + 1), "exporting");
    let mut chunks = store.scan(&ctx.stream, 0);
    let stream = ctx.stream.clone();
    let b = bar.clone();
    let (count, last) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, Option<(u64, String)>)> {
            let mut w = ExportWriter::new(BufWriter::with_capacity(1 << 20, out), &stream)?;
            let (mut count, mut last) = (0u64, None);
            while let Some(chunk) = chunks.blocking_recv() {
                for e in chunk? {
                    w.write(&e)?;
                    count += 1;
                    last = Some((e.seq, e.entry_hash.to_hex()));
                }
                b.set_position(count);
            }
            let buffered = w.finish()?;
            buffered
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot flush the export: {}", e.error()))?
                .flush()?;
            Ok((count, last))
        })
        .await??;
    bar.finish_and_clear();
    if !to_stdout {
        std::fs::File::open(&args.out)
            .and_then(|f| f.sync_all())
            .ok();
    }
    let (seq, hash) = last.unwrap_or_default();
    eprintln!(
        "exported {count} entries of stream {} to {} (head seq {seq}, hash {hash}); check it with `auditledger verify --export {}`",
        ctx.stream,
        args.out.display(),
        args.out.display()
    );
    Ok(EXIT_OK)
}
