//! `millrace bench`: the benchmark scenarios of `millrace::bench` against a
//! private redis-server (or `--redis`), with BullMQ on the same server when
//! Node is installed; a table, or `--json`.

use millrace::bench::{BULLMQ_DIR, BenchOptions, run, run_bullmq, table};
use millrace::local::PrivateRedis;

use crate::cli::{BenchArgs, BenchWorkerArgs, Global};
use crate::error::CliError;
use crate::output::{Out, note};

pub async fn run_cmd(global: &Global, args: BenchArgs, out: &mut Out) -> Result<(), CliError> {
    let explicit = global.redis.is_some() || std::env::var("REDIS_URL").is_ok();
    let (_server, url) = if explicit {
        (None, global.redis_url())
    } else {
        let s = PrivateRedis::start().map_err(|e| {
            CliError::other(e.to_string()).hint("install redis-server (Debian/Ubuntu: apt-get install redis-server) or pass --redis URL")
        })?;
        let url = s.url();
        (Some(s), url)
    };
    let mut opts = if args.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    if let Some(n) = args.n {
        opts.n = n.max(100);
        opts.memory_n = n.max(100);
    }
    if let Some(r) = args.reps {
        opts.reps = r.max(1);
    }
    opts.only = args.only.clone();
    let prefix = if global.prefix_set {
        global.prefix.clone()
    } else {
        "bench".to_string()
    };
    // The worker processes of `scale.processes.*`: this program again.
    opts.worker_command =
        std::env::current_exe()
            .ok()
            .map(|program| millrace::bench::WorkerCommand {
                program,
                args: vec!["bench-worker".into()],
                env: vec![
                    ("MILLRACE_REDIS_URL".into(), url.clone()),
                    ("MILLRACE_PREFIX".into(), prefix.clone()),
                ],
            });
    let client = crate::connect(&Global {
        redis: Some(url.clone()),
        prefix,
        prefix_set: true,
        ..global.clone()
    })
    .await?;
    let (bullmq, skipped) = if args.no_bullmq {
        (None, Some("--no-bullmq".to_string()))
    } else {
        if !args.json {
            note("running BullMQ on the same Redis (benches/peers/bullmq)...");
        }
        match run_bullmq(std::path::Path::new(BULLMQ_DIR), &url, args.quick).await {
            Ok(v) => (Some(v), None),
            Err(why) => (None, Some(why)),
        }
    };
    if !args.json {
        note("running millrace scenarios...");
    }
    // The dashboard's scenarios first: the library's leave their topics
    // behind, which the overview would read too.
    let serve_figures = if crate::serve::bench::selected(&opts) {
        let shape = if args.quick {
            crate::serve::bench::Shape::quick()
        } else {
            crate::serve::bench::Shape::full()
        };
        crate::serve::bench::run(&client, &opts, shape).await?
    } else {
        Vec::new()
    };
    let mut report = run(&client, &opts, bullmq, skipped).await?;
    report.figures.extend(serve_figures);
    if let Some(dir) = &args.report {
        let written = millrace::bench::write_report(&report, dir)?;
        if !args.json {
            for f in written {
                note(&format!("wrote {}", f.display()));
            }
        }
    }
    if args.json {
        out.json_line(&report)
    } else {
        out.line(table(&report))
    }
}

/// `millrace bench-worker TOPIC GROUP`: one worker process of the
/// `scale.processes.*` scenarios (started by `millrace bench`).
pub async fn worker(global: &Global, args: BenchWorkerArgs) -> Result<(), CliError> {
    let client = crate::connect(global).await?;
    Ok(millrace::bench::worker_process(&client, &args.topic, &args.group).await?)
}
