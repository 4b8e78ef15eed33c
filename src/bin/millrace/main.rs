//! The `millrace` binary: admin commands over the library, and the
//! scheduler.
//!
//! `main` parses the command line (clap, in [`cli`]), sets up logging,
//! connects through the library and hands off to one module per command
//! family. Every failure comes back here as a [`CliError`] and leaves as one
//! `error:` line on stderr (plus an optional `hint:`) and an exit code:
//! 0 success, 2 bad usage or input, 3 Redis unreachable, 1 anything else.
//! The interface is pinned in `CLI.md` and by `tests/cli.rs`.

mod bench_cmd;
mod cli;
mod demo;
mod dlq_cmd;
mod error;
mod group_cmd;
mod jsonl;
mod message_cmd;
mod otel;
mod output;
mod publish_cmd;
mod request_cmd;
mod schedule_cmd;
mod schema_cmd;
mod serve;
mod tail_cmd;
mod topic_cmd;
mod worker;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use millrace::redact_url;
use millrace::{Client, Config};

use crate::cli::{Cli, Command, Global, TlsFiles};
use crate::error::{CliError, scrub_password};
use crate::output::{Out, note};

// The worker and the benchmarks allocate per message on several threads;
// glibc's malloc spent about a quarter of the client's time there (perf,
// see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints help and version itself, and exits 2 on a usage error.
    let matches = Cli::command().get_matches();
    let mut cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    cli.global.prefix_set = matches!(
        matches.value_source("prefix"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    let json_logs = matches!(&cli.command, Command::Worker(a) if a.log_format == "json");
    // The demo shows its handlers' failures itself, as part of the story.
    let default_filter = match cli.command {
        Command::Demo(_) => demo::LOG_FILTER,
        _ => "warn",
    };
    // A worker whose file has [otel] exports its spans (the file is read
    // again, and any error in it reported, when the worker starts).
    let otel = match &cli.command {
        Command::Worker(a) => worker::config::load(&a.config).ok().and_then(|c| c.otel),
        _ => None,
    };
    let url = cli.global.redis_url();
    let mut out = Out::new();
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => {
            // The OTLP/gRPC exporter's channel lives on this runtime: it is
            // built inside it, and flushed before the runtime stops.
            let traces = {
                let _inside = rt.enter();
                init_logging(json_logs, default_filter, otel.as_ref())
            };
            let result = rt.block_on(run(cli, &mut out));
            if let Some(t) = traces {
                t.shutdown();
            }
            result
        }
        Err(e) => {
            init_logging(json_logs, default_filter, None);
            Err(CliError::other(format!(
                "cannot start the async runtime: {e}"
            )))
        }
    };
    let result = match result {
        Ok(()) => out.flush(),
        Err(e) => {
            // Show what was printed before the failure; the failure is what
            // gets reported, even if stdout is gone too.
            let _ = out.flush();
            Err(e)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.silent => ExitCode::from(e.code),
        Err(e) => {
            // One line, whatever the message: scripts read the first line.
            let message = e.message.replace(['\r', '\n'], " ");
            note(&scrub_password(&format!("error: {message}"), &url));
            if let Some(hint) = &e.hint {
                note(&scrub_password(&format!("hint: {hint}"), &url));
            }
            ExitCode::from(e.code)
        }
    }
}

async fn run(cli: Cli, out: &mut Out) -> Result<(), CliError> {
    let global = &cli.global;
    match cli.command {
        Command::Topic(cmd) => topic_cmd::run(global, cmd, out).await,
        Command::Publish(args) => publish_cmd::run(global, args, out).await,
        Command::Tail(args) => tail_cmd::run(global, args, out).await,
        Command::Group(cmd) => group_cmd::run(global, cmd, out).await,
        Command::Dlq(cmd) => dlq_cmd::run(global, cmd, out).await,
        Command::Schema(cmd) => schema_cmd::run(global, cmd, out).await,
        Command::Message(cmd) => message_cmd::run(global, cmd, out).await,
        Command::Request(args) => request_cmd::run(global, args, out).await,
        Command::Serve(args) => serve::run(global, args).await,
        Command::Schedule(cmd) => schedule_cmd::run(global, cmd, out).await,
        Command::Scheduler => schedule_cmd::scheduler(global).await,
        Command::Demo(args) => demo::run(global, args, out).await,
        Command::Worker(args) => worker::run(global, &args.config).await,
        Command::Bench(args) => bench_cmd::run_cmd(global, args, out).await,
        Command::BenchWorker(args) => bench_cmd::worker(global, args).await,
    }
}

/// Connects with the global flags. An unreachable server is reported with
/// its (password-free) URL.
pub async fn connect(global: &Global) -> Result<Client, CliError> {
    connect_with_tls(global, global.tls()).await
}

/// Connects with the global flags' URL and prefix and the given TLS files.
pub async fn connect_with_tls(global: &Global, tls: TlsFiles) -> Result<Client, CliError> {
    let url = global.redis_url();
    // Config errors name the bad URL (redacted), prefix or TLS file themselves.
    let config = Config::new(&url).and_then(|c| c.prefix(&global.prefix))?;
    let config = with_tls(config, &tls)?;
    Client::connect(config).await.map_err(|e| {
        let err = CliError::from(e);
        if err.code == error::EXIT_UNREACHABLE {
            err.context(format!("cannot connect to Redis at {}", redact_url(&url)))
        } else {
            err
        }
    })
}

/// Adds the TLS files to `config`; a certificate without its key (or the
/// other way round) is a usage error.
fn with_tls(mut config: Config, tls: &TlsFiles) -> Result<Config, CliError> {
    if let Some(ca) = &tls.ca {
        config = config.tls_ca_file(ca)?;
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(config.tls_client_cert_files(cert, key)?),
        (None, None) => Ok(config),
        (Some(_), None) => Err(CliError::usage(
            "a TLS client certificate needs its key: add --tls-key (MILLRACE_TLS_KEY)",
        )),
        (None, Some(_)) => Err(CliError::usage(
            "a TLS client key needs its certificate: add --tls-cert (MILLRACE_TLS_CERT)",
        )),
    }
}

/// Logs to stderr at the level in `RUST_LOG` (default: `default_filter`,
/// warnings), as text
/// or, for `worker --log-format json`, one JSON object per line.
/// Logs to stderr (filtered by `RUST_LOG`, else `default_filter`), and
/// with `[otel]` spans to its collector (their own filter: millrace's
/// spans at `INFO`, whatever the log filter).
fn init_logging(
    json: bool,
    default_filter: &str,
    otel: Option<&worker::config::OtelConfig>,
) -> Option<otel::Traces> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (spans, traces) = match otel.map(otel::layer) {
        Some(Ok((layer, traces))) => (Some(layer), Some(traces)),
        Some(Err(e)) => {
            note(&format!("warning: {e}; spans are not exported"));
            (None, None)
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    traces
}
