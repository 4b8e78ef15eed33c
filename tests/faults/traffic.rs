//! Steady traffic: tasks publish `(key, seq)` messages, each key's sequence
//! in order, each with a dedup id so a publish retried after an unknown
//! outcome is not written twice. A publish counts once Redis acknowledged it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace::{Client, Record};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Default)]
pub struct Published {
    /// Per key, how many seqs Redis acknowledged (0..n).
    pub acked: HashMap<u32, u32>,
    /// When each `(key, seq)` was acknowledged.
    pub acked_at: HashMap<(u32, u32), Instant>,
    /// Publish attempts that failed (retried until acknowledged).
    pub errors: usize,
    /// The text of the first few distinct errors.
    pub error_texts: Vec<String>,
    /// When the last error happened and when publishing succeeded after it.
    pub outages: Vec<(Instant, Instant)>,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.acked.values().map(|n| *n as u64).sum()
    }
}

pub struct Traffic {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pub published: Arc<Mutex<Published>>,
}

impl Traffic {
    /// `rate` messages per second over `keys` keys from `tasks` publishers.
    pub fn start(client: &Client, topic: &str, keys: u32, rate: u32, tasks: u32) -> Traffic {
        let (stop, _) = watch::channel(false);
        let published: Arc<Mutex<Published>> = Arc::default();
        let mut set = JoinSet::new();
        let interval = Duration::from_secs_f64(tasks as f64 / rate as f64);
        for t in 0..tasks {
            let client = client.clone();
            let topic = topic.to_string();
            let published = published.clone();
            let stop = stop.subscribe();
            let mine: Vec<u32> = (0..keys).filter(|k| k % tasks == t).collect();
            set.spawn(async move {
                let mut next: HashMap<u32, u32> = mine.iter().map(|k| (*k, 0)).collect();
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                'keys: for k in mine.iter().cycle() {
                    let seq = next[k];
                    let mut failing_since = None;
                    loop {
                        tick.tick().await;
                        if *stop.borrow() {
                            break 'keys;
                        }
                        let rec = Record::encode(&(*k, seq))
                            .unwrap()
                            .key(format!("k{k}"))
                            .dedup_id(format!("{k}:{seq}"))
                            // Retries come within seconds; short-lived
                            // markers keep Redis memory flat in the soak.
                            .dedup_ttl(Duration::from_secs(120));
                        match client.publish_record(&topic, rec).await {
                            Ok(_) => {
                                let mut p = published.lock().unwrap();
                                p.acked.insert(*k, seq + 1);
                                p.acked_at.insert((*k, seq), Instant::now());
                                if let Some(since) = failing_since {
                                    p.outages.push((since, Instant::now()));
                                }
                                break;
                            }
                            Err(e) => {
                                let mut p = published.lock().unwrap();
                                p.errors += 1;
                                let text = e.to_string();
                                if p.error_texts.len() < 5 && !p.error_texts.contains(&text) {
                                    p.error_texts.push(text);
                                }
                                failing_since.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    next.insert(*k, seq + 1);
                }
            });
        }
        Traffic {
            stop,
            tasks: set,
            published,
        }
    }

    /// Stops publishing (a publish in progress completes) and returns what
    /// was acknowledged.
    pub async fn stop(mut self) -> Published {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.published.lock().unwrap())
    }
}
