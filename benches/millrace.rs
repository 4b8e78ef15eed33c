//! `cargo bench`: the same scenarios as `millrace bench` (see
//! `millrace::bench`), against a private redis-server, with BullMQ on the
//! same server when Node is installed.
//!
//! `MILLRACE_BENCH_QUICK=1` for a smoke run; `MILLRACE_REDIS_URL` to use
//! another server; `MILLRACE_BENCH_NO_BULLMQ=1` to skip the peer.

use millrace::bench::{BULLMQ_DIR, BenchOptions, WorkerCommand, run, run_bullmq, table};
use millrace::local::PrivateRedis;
use millrace::{Client, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks for a list
    }
    let quick = std::env::var("MILLRACE_BENCH_QUICK").is_ok();
    let (_server, url) = match std::env::var("MILLRACE_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = PrivateRedis::start()?;
            let url = s.url();
            (Some(s), url)
        }
    };
    let client = Client::connect(Config::new(&url)?.prefix("bench")?).await?;
    let (bullmq, skipped) = if std::env::var("MILLRACE_BENCH_NO_BULLMQ").is_ok() {
        (None, Some("MILLRACE_BENCH_NO_BULLMQ".to_string()))
    } else {
        match run_bullmq(std::path::Path::new(BULLMQ_DIR), &url, quick).await {
            Ok(v) => (Some(v), None),
            Err(why) => (None, Some(why)),
        }
    };
    let mut opts = if quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    opts.worker_command = Some(WorkerCommand {
        program: env!("CARGO_BIN_EXE_millrace").into(),
        args: vec!["bench-worker".into()],
        env: vec![
            ("MILLRACE_REDIS_URL".into(), url.clone()),
            ("MILLRACE_PREFIX".into(), "bench".into()),
        ],
    });
    let report = run(&client, &opts, bullmq, skipped).await?;
    println!("{}", table(&report));
    Ok(())
}
