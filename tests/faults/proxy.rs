//! A TCP proxy on loopback between millrace and Redis that can cut every
//! connection, stall traffic (nothing forwarded, connections kept open) and
//! refuse new connections for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    port: u16,
    /// Incremented to cut every connection open at that moment.
    cut: watch::Sender<u64>,
    /// While true nothing is forwarded.
    stall: watch::Sender<bool>,
    refuse: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(0u64);
        let (stall, _) = watch::channel(false);
        let refuse = Arc::new(AtomicBool::new(false));
        let (cut2, stall2, refuse2) = (cut.clone(), stall.clone(), refuse.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if refuse2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut_rx = cut2.subscribe();
                let stall_rx = stall2.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    pipe(client, server, cut_rx, stall_rx).await;
                });
            }
        });
        Proxy {
            port,
            cut,
            stall,
            refuse,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every connection open now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Stops (true) or resumes (false) forwarding on every connection.
    pub fn set_stalled(&self, stalled: bool) {
        self.stall.send_replace(stalled);
    }

    /// Closes new connections at once while true.
    pub fn set_refusing(&self, refusing: bool) {
        self.refuse.store(refusing, Ordering::SeqCst);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut cut: watch::Receiver<u64>,
    stall: watch::Receiver<bool>,
) {
    cut.mark_unchanged();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut tasks = JoinSet::new();
    tasks.spawn(copy(cr, sw, stall.clone()));
    tasks.spawn(copy(sr, cw, stall));
    tokio::select! {
        _ = cut.changed() => {}
        _ = tasks.join_next() => {}
    }
    // Dropping the set aborts both directions and closes both sockets.
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stall: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the bytes while stalled.
        if stall.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
