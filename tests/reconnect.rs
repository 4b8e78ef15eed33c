//! A Redis that goes away and comes back: publishing fails clearly while it
//! is down and works again after, without a new client.

mod support;

use std::time::{Duration, Instant};

use millrace::{Client, Config, Record, TopicSpec};
use support::RedisServer;

#[tokio::test]
async fn publish_recovers_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let config = Config::new(server.url())
        .unwrap()
        .response_timeout(Duration::from_secs(2));
    let c = Client::connect(config).await.unwrap();
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
    c.publish_record("orders", Record::encode(&1).unwrap())
        .await
        .unwrap();

    server.stop();
    let started = Instant::now();
    let err = c
        .publish_record("orders", Record::encode(&2).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a publish to a dead server must fail, not hang"
    );
    assert!(err.to_string().starts_with("redis: "), "{err}");

    // The restarted server kept nothing (no persistence), not even our
    // scripts: the dedup publish meets NOSCRIPT and must reload them.
    server.restart();
    let c2 = c.clone();
    support::wait_until(Duration::from_secs(15), "publishing works again", || {
        let c = c2.clone();
        async move {
            c.publish_record("orders", Record::encode(&3).unwrap())
                .await
                .is_ok()
        }
    })
    .await;
    let r = c
        .publish_record(
            "orders",
            Record::encode(&4).unwrap().dedup_id("after-restart"),
        )
        .await
        .unwrap();
    assert!(!r.duplicate);
    let again = c
        .publish_record(
            "orders",
            Record::encode(&5).unwrap().dedup_id("after-restart"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, r.id);
    // Scripts called one by one reload too.
    c.create_topic(&TopicSpec::new("orders", 2).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_unreachable_error() {
    let port = support::free_port();
    let config = Config::new(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1));
    let err = Client::connect(config).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(!err.is_invalid_input());
}

#[tokio::test]
async fn a_wrong_password_never_shows_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "right-one"]);
    let url = server.url().replace("redis://", "redis://:wrong-one@");
    let config = Config::new(&url).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("wrong-one"), "{shown}");
    let err = Client::connect(config).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-one"), "{text}");

    let ok_url = server.url().replace("redis://", "redis://:right-one@");
    let c = Client::connect(Config::new(ok_url).unwrap()).await.unwrap();
    assert!(!format!("{c:?}").contains("right-one"));
}

/// A stand-in for a server too old to use: answers `INFO` as Redis 6.2 and
/// everything else with `+OK`. (No Redis 6 is installable here; this checks
/// only the version gate.)
fn fake_old_server() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let mut len = String::new();
                        let mut arg = String::new();
                        reader.read_line(&mut len).unwrap();
                        reader.read_line(&mut arg).unwrap();
                        args.push(arg.trim().to_uppercase());
                    }
                    let reply = if args.first().map(String::as_str) == Some("INFO") {
                        let body = "# Server\r\nredis_version:6.2.6\r\n";
                        format!("${}\r\n{body}\r\n", body.len())
                    } else {
                        "+OK\r\n".to_string()
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn an_old_server_is_refused_with_a_clear_error() {
    let port = fake_old_server();
    let err = Client::connect(Config::new(format!("redis://127.0.0.1:{port}")).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported server redis 6.2.6: millrace needs Redis 7.0 or later (or a compatible server)"
    );
    assert!(err.is_unreachable(), "the CLI exits 3 for it");
}

/// A reader (as `millrace tail --follow` uses) goes on across a Redis
/// restart without an error: its reads are idempotent, so one that met the
/// dropped connection is sent again on the new one.
#[tokio::test]
async fn a_reader_reads_on_across_a_restart() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let config = || {
        Config::new(&url)
            .unwrap()
            .response_timeout(Duration::from_secs(2))
    };
    let c = Client::connect(config()).await.unwrap();
    // One partition: across partitions, time order is only as fine as a ms.
    c.create_topic(&TopicSpec::new("feed", 1).unwrap())
        .await
        .unwrap();
    let recs: Vec<Record> = (0..4u32).map(|i| Record::encode(&i).unwrap()).collect();
    c.publish_batch("feed", recs).await.unwrap();
    let mut all = c
        .reader("feed", millrace::StartAt::Earliest)
        .await
        .unwrap()
        .batch(1);
    let first: u32 = all.next().await.unwrap().unwrap().decode().unwrap();
    assert_eq!(first, 0);

    server.restart();
    // The next read goes over the multiplexed connection Redis dropped.
    let mut rest = Vec::new();
    while let Some(m) = all.next().await.unwrap() {
        rest.push(m.decode::<u32>().unwrap());
    }
    assert_eq!(rest, [1, 2, 3]);

    // Following: the reader is live (it waits, and a publish wakes it),
    // it waits again, Redis restarts under that wait, and it reads on.
    let mut follow = c
        .reader("feed", millrace::StartAt::Latest)
        .await
        .unwrap()
        .follow(true);
    let mut waiting = tokio::spawn(async move {
        let m = follow.next().await;
        (follow, m)
    });
    wait_until_blocked_in_xread(&server).await;
    c.publish_record("feed", Record::encode(&5u32).unwrap())
        .await
        .unwrap();
    let (mut follow, m) = tokio::time::timeout(Duration::from_secs(20), &mut waiting)
        .await
        .expect("the waiting reader saw the publish")
        .unwrap();
    assert_eq!(m.unwrap().unwrap().decode::<u32>().unwrap(), 5);

    let waiting = tokio::spawn(async move { follow.next().await });
    wait_until_blocked_in_xread(&server).await;
    server.restart();
    let other = Client::connect(config()).await.unwrap();
    other
        .publish_record("feed", Record::encode(&7u32).unwrap())
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the reader saw the publish after the restart")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.decode::<u32>().unwrap(), 7);
}

/// Until a client of `server` (private to the test, so ours) waits in a
/// blocking `XREAD`, as `CLIENT LIST` shows it.
async fn wait_until_blocked_in_xread(server: &RedisServer) {
    let port = server.port();
    support::wait_until(
        Duration::from_secs(10),
        "a client blocked in XREAD",
        || async move { support::blocked_in_xread(port) },
    )
    .await;
}
