//! `millrace worker --config FILE.toml`: runs the consumers of a TOML file
//! (each a library `Worker` whose handler is a program or an HTTP endpoint)
//! until SIGINT or SIGTERM, then shuts down gracefully; a second signal
//! forces the exit.

pub(crate) mod config;
mod exec;
mod http;
mod metrics;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;

use millrace::Worker;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Global;
use crate::error::CliError;
use config::HandlerSpec;

/// Runs the worker described by the file at `path`.
pub async fn run(global: &Global, path: &Path) -> Result<(), CliError> {
    // Everything in the file is checked before anything connects.
    let cfg = config::load(path).map_err(CliError::usage)?;
    // Watch the signals first: one that comes while connecting and starting
    // waits here and shuts down what started, instead of killing the process.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::other(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::other(format!("cannot watch SIGINT: {e}")))?;
    // The global flag and the environment win over the file.
    let url = match (&global.redis, std::env::var("REDIS_URL").ok(), &cfg.redis) {
        (Some(u), _, _) if !u.is_empty() => u.clone(),
        (_, Some(u), _) if !u.is_empty() => u,
        (_, _, Some(u)) => u.clone(),
        _ => crate::cli::DEFAULT_REDIS_URL.to_string(),
    };
    let prefix = match (&cfg.prefix, global.prefix_set) {
        (Some(p), false) => p.clone(),
        _ => global.prefix.clone(),
    };
    // Flags and environment win over the file's [tls], file by file.
    let tls = global.tls().or(cfg.tls.clone());
    let client = crate::connect_with_tls(
        &Global {
            redis: Some(url),
            prefix,
            prefix_set: true,
            ..global.clone()
        },
        tls,
    )
    .await?;
    // The dashboard first: a port taken stops the worker before it takes
    // any message.
    let dashboard = match &cfg.serve {
        Some(v) => Some(crate::serve::spawn_in_worker(&client, v).await?),
        None => None,
    };
    // Handlers without a `ca` share a client (and its connection pool) per
    // scheme, made when first needed: the system's roots are looked for only
    // when an https:// handler without `ca` needs them.
    let mut shared_http: HashMap<bool, reqwest::Client> = HashMap::new();

    let mut handles = Vec::new();
    let mut watched = Vec::new();
    for c in &cfg.consumers {
        let mut b = Worker::builder(&client, &c.group)
            .mode(c.mode)
            .concurrency(c.concurrency)
            .session_timeout(cfg.session_timeout)
            .heartbeat_interval(cfg.session_timeout / 10)
            .drain_timeout(cfg.drain_timeout)
            .retry(c.retry.clone())
            .validate_schema(c.validate)
            .result_ttl(c.result_ttl)
            .acks(c.acks)
            .start_at(c.start.clone());
        if let Some(id) = &cfg.instance_id {
            b = b.instance_id(id.clone());
        }
        if let Some(r) = c.rate_limit {
            b = b.rate_limit(r);
        }
        b = match &c.handler {
            HandlerSpec::Exec { argv, timeout } => {
                let argv = Arc::new(argv.clone());
                let timeout = *timeout;
                b.handle_raw(&c.topic, move |msg, ctx| {
                    let argv = argv.clone();
                    async move { exec::run(&argv, timeout, msg, ctx).await }
                })
            }
            HandlerSpec::Http { url, timeout, ca } => {
                let https = url.starts_with("https://");
                let trust = match ca {
                    Some(ca) => http::Trust::Only(&ca.certs),
                    None if https => http::Trust::System,
                    None => http::Trust::Nobody,
                };
                let made = |trust| {
                    http::client(trust).map_err(|e| {
                        CliError::other(format!(
                            "cannot set up the HTTP client of {} {}: {e}",
                            c.topic, c.group
                        ))
                    })
                };
                let client = match (ca, shared_http.entry(https)) {
                    (Some(_), _) => made(trust)?,
                    (None, Entry::Occupied(e)) => e.get().clone(),
                    (None, Entry::Vacant(e)) => e.insert(made(trust)?).clone(),
                };
                let (url, timeout) = (Arc::new(url.clone()), *timeout);
                b.handle_raw(&c.topic, move |msg, ctx| {
                    let (url, client) = (url.clone(), client.clone());
                    async move { http::run(&client, &url, timeout, msg, ctx).await }
                })
            }
        };
        let worker = b.build()?;
        watched.push(metrics::Watched {
            topic: c.topic.clone(),
            group: c.group.clone(),
            member: worker.member_id().to_string(),
            stats: worker.stats(),
        });
        let handle = worker.start().await?;
        tracing::info!(topic = %c.topic, group = %c.group, member = %handle.member_id(), "consumer started");
        handles.push(handle);
    }
    let server = match cfg.metrics {
        Some(addr) => {
            let listener_client = client.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, listener_client, watched).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            });
            tracing::info!(%addr, "serving /metrics and /healthz");
            Some(task)
        }
        None => None,
    };

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    if let Some(d) = dashboard {
        d.abort();
    }
    tracing::info!("shutting down: finishing in-flight messages (a second signal forces exit)");
    // A second signal ends the process at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("millrace worker: second signal, exiting without finishing");
        std::process::exit(130);
    });
    let results = futures_util::future::join_all(handles.into_iter().map(|h| h.shutdown())).await;
    if let Some(s) = server {
        s.abort();
    }
    for r in results {
        r?;
    }
    Ok(())
}
