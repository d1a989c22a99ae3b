//! HTTP load test: prints figures, asserts nothing (timing thresholds do not belong in tests on
//! shared machines). In one process and one run, on the same synthetic clinic events:
//!
//! - direct: N tasks appending one event per request through the `GroupCommitWriter` (each
//!   request validated, pseudonymized and encoded by its caller, as the server does);
//! - HTTP: N concurrent clients, one keep-alive connection each, POSTing one event per request
//!   to `auditledger serve` on 127.0.0.1 (the real server, in this process), each request
//!   acknowledged only after its commit; with `--with-reqwest`, the same through the
//!   `auditledger-client` crate.
//!
//! Both run for a fixed time. Client and server share the machine's cores, so the HTTP figure
//! includes the clients' own cost. Run with `scripts/bench-http` (release build).

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use auditledger::bench::percentile;
use auditledger::server::auth::{Role, TokenStore};
use auditledger::server::config::{ServeArgs, Settings};
use auditledger::server::{serve, ServeInputs};
use auditledger::synthetic::clinic_day;
use clap::Parser;
use ledger::{
    GroupCommitWriter, Ingest, PseudonymKey, Pseudonymizer, Store, StreamId, SystemClock,
    VerifyOptions, WriterConfig,
};
use store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(about = "Load test of `auditledger serve` on loopback beside direct appends.")]
struct Args {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients (HTTP connections) and direct appenders.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Distinct synthetic events cycled through.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Also measure through the `auditledger-client` crate (reqwest), whose own CPU cost on
    /// this shared machine is counted against the server.
    #[arg(long)]
    with_reqwest: bool,
}

struct Figures {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
    errors: usize,
}

fn figures(mut latencies: Vec<Duration>, errors: usize, elapsed: f64) -> Figures {
    latencies.sort_unstable();
    Figures {
        per_sec: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        requests: latencies.len(),
        errors,
    }
}

async fn direct(
    dir: &std::path::Path,
    ingest: Arc<Ingest>,
    events: Arc<Vec<serde_json::Value>>,
    n: usize,
    secs: f64,
) -> anyhow::Result<Figures> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir)?);
    let (writer, task) = GroupCommitWriter::start(
        store,
        StreamId::default(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..n {
        let (w, ingest, events) = (writer.clone(), ingest.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = a;
            while Instant::now() < deadline {
                let t = Instant::now();
                let prepared = match ingest.prepare(&events[i % events.len()], None) {
                    Ok(p) => p,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                match w.append(vec![prepared]).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += n;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(writer);
    task.await?;
    Ok(figures(lat, errors, elapsed))
}

async fn over_http(
    addr: SocketAddr,
    token: &str,
    events: &[serde_json::Value],
    n: usize,
    secs: f64,
) -> anyhow::Result<Figures> {
    // Bodies serialized up front: the figure is the server's, not serde's on the client side.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<_, _>>()?,
    );
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..n {
        // One client per task: one keep-alive connection each, as N service workers would.
        let client = auditledger_client::Client::new(&base, token)?;
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client
                    .append_body(bodies[i % bodies.len()].clone(), None)
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                i += n;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    Ok(figures(lat, errors, start.elapsed().as_secs_f64()))
}

/// The same load through a lean HTTP/1.1 client (hyper, one connection per task, no pool or
/// per-request timer): client and server share the cores, so a heavy load generator would
/// measure itself. Every answer is read in full and must be 200.
async fn over_http_lean(
    addr: SocketAddr,
    token: &str,
    events: &[serde_json::Value],
    n: usize,
    secs: f64,
) -> anyhow::Result<Figures> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        events
            .iter()
            .map(|e| serde_json::to_vec(e).map(Bytes::from))
            .collect::<Result<_, _>>()?,
    );
    let auth = format!("Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..n {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let (bodies, auth) = (bodies.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let req = hyper::Request::post("/v1/events")
                    .header("host", "127.0.0.1")
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i % bodies.len()].clone()));
                let ok = match req {
                    Ok(req) => match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.into_body().collect().await.is_ok() && status == 200
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
                i += n;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    Ok(figures(lat, errors, start.elapsed().as_secs_f64()))
}

fn row(name: &str, f: &Figures, reference: f64) {
    println!(
        "{name:<44} {:>10.0} {:>7.2} {:>8.2} {:>8.2} {:>9} {:>7}",
        f.per_sec,
        f.per_sec / reference,
        f.p50_ms,
        f.p99_ms,
        f.requests,
        f.errors
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let key = PseudonymKey::from_bytes(rand::random());
    let mut ingest = Ingest::new(Pseudonymizer::new(key.clone()));
    let (events, _) = clinic_day(7, args.events);
    let events = Arc::new(events);
    ingest.alg = ledger::HashAlg::default();
    let ingest = Arc::new(ingest);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "auditledger HTTP load test — {cores} cores — {} connections/appenders, {:.0} s each, one event per request, synchronous=FULL",
        args.connections, args.seconds
    );

    let direct_fig = direct(
        &tmp.path().join("direct"),
        ingest.clone(),
        events.clone(),
        args.connections,
        args.seconds,
    )
    .await
    .context("direct appends")?;

    // The real server, in this process, on loopback.
    let server_dir = tmp.path().join("server");
    std::fs::create_dir_all(&server_dir)?;
    let token = TokenStore::open(&server_dir)?.create("bench", Role::Service)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&server_dir)?);
    let settings = Settings::resolve(&ServeArgs {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..ServeArgs::default()
    })?;
    let inputs = ServeInputs {
        security_rules: Default::default(),
        analytics: Default::default(),
        settings,
        store,
        stream: StreamId::default(),
        ingest: Ingest::new(Pseudonymizer::new(key)),
        data_dir: server_dir.clone(),
        verify_options: VerifyOptions::default(),
        // As in production: periodic checkpoints run beside the appends.
        signer: Some(ledger::checkpoint::NoteSigner::new(
            "auditledger/default",
            &[3; 32],
        )?),
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        inputs,
        move |addr| {
            let _ = addr_tx.send(addr);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = addr_rx.await.context("the server did not start")?;
    let http_fig = over_http_lean(addr, &token, &events, args.connections, args.seconds).await?;
    let reqwest_fig = if args.with_reqwest {
        Some(over_http(addr, &token, &events, args.connections, args.seconds).await?)
    } else {
        None
    };
    let _ = stop_tx.send(());
    server.await??;

    println!(
        "\n{:<44} {:>10} {:>7} {:>8} {:>8} {:>9} {:>7}",
        "", "events/s", "ratio", "p50 ms", "p99 ms", "requests", "errors"
    );
    row(
        &format!("direct GroupCommitWriter, {} appenders", args.connections),
        &direct_fig,
        direct_fig.per_sec,
    );
    row(
        &format!("HTTP POST /v1/events, {} connections", args.connections),
        &http_fig,
        direct_fig.per_sec,
    );
    if let Some(f) = &reqwest_fig {
        row(
            &format!("  same, through auditledger-client ({})", args.connections),
            f,
            direct_fig.per_sec,
        );
    }
    println!(
        "\nHTTP reaches {:.0}% of direct appends (target: at least 50%).",
        100.0 * http_fig.per_sec / direct_fig.per_sec.max(1.0)
    );
    Ok(())
}
