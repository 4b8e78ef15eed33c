//! Publishes invoices to a partitioned topic and reads them back.
//!
//! Uses the Redis in `MILLRACE_REDIS_URL` if set; otherwise it starts a
//! private `redis-server` from PATH and stops it at the end.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use millrace::local::PrivateRedis;
use millrace::{Client, Config, Event, PublishOptions, StartAt, TopicSpec};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct InvoiceCreated {
    invoice: String,
    tenant: String,
    cents: u64,
}

impl Event for InvoiceCreated {
    const TOPIC: &'static str = "erp.v1.invoice.created";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server, url) = PrivateRedis::from_env_or_start()?;
    if server.is_some() {
        println!("started a private redis-server at {url}");
    }
    let client = Client::connect(Config::new(&url)?.prefix("quickstart")?).await?;
    let topic = TopicSpec::new(InvoiceCreated::TOPIC, 8)?;
    client.create_topic(&topic).await?;

    // 10 000 invoices from 40 tenants, published concurrently: the producer
    // batches them into pipelines behind the scenes.
    let started = Instant::now();
    let tasks: Vec<_> = (0..10_000u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let invoice = InvoiceCreated {
                    invoice: format!("inv-{i}"),
                    tenant: format!("tenant-{}", i % 40),
                    cents: 1_000 + i,
                };
                client.publish(&invoice).await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "published 10000 invoices in {:.0} ms ({:.0}/s)",
        elapsed.as_secs_f64() * 1e3,
        10_000.0 / elapsed.as_secs_f64()
    );

    // A reminder in an hour, idempotent: the second publish is a duplicate.
    let reminder = InvoiceCreated {
        invoice: "inv-7".into(),
        tenant: "tenant-7".into(),
        cents: 1_007,
    };
    let opts = || {
        PublishOptions::new()
            .delay(Duration::from_secs(3600))
            .dedup_id("reminder-inv-7")
    };
    let first = client.publish_with(&reminder, opts()).await?;
    let again = client.publish_with(&reminder, opts()).await?;
    println!(
        "delayed reminder due at {} ms (duplicate publish detected: {})",
        first.due_ms.unwrap_or_default(),
        again.duplicate
    );

    let info = client.describe_topic(InvoiceCreated::TOPIC).await?;
    println!(
        "topic {}: {} messages, per partition {:?}, {} delayed",
        info.name, info.length, info.partition_lengths, info.delayed
    );

    // Read everything back in time order, without a consumer group.
    let mut reader = client
        .reader(InvoiceCreated::TOPIC, StartAt::Earliest)
        .await?;
    let mut per_tenant: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = 0;
    while let Some(msg) = reader.next().await? {
        let invoice: InvoiceCreated = msg.decode()?;
        if count < 3 {
            println!("  p{} {} {:?}", msg.partition, msg.id, invoice);
        }
        *per_tenant.entry(invoice.tenant).or_default() += 1;
        count += 1;
    }
    println!(
        "read back {count} messages from {} tenants",
        per_tenant.len()
    );
    client.delete_topic(InvoiceCreated::TOPIC).await?;
    Ok(())
}
