//! An ERP on millrace: producers and three consumer groups fanning out over
//! the same events.
//!
//! Ten tenants place orders, get invoiced and pay, all at once. Every consumer
//! group sees every invoice: `notification` "emails" each one and checks that
//! a tenant's invoices arrive in the order they were published; `pdf-report`
//! has two members that share the invoice topic's six partitions; `audit` is
//! one worker with three handlers, for orders, invoices and payments. Once
//! every group has seen every event, the workers shut down gracefully, a
//! summary is printed and the topics are deleted.
//!
//! Uses the Redis in `MILLRACE_REDIS_URL` if set, under the key prefix
//! `erp-example` so that it touches nothing else; otherwise it starts a
//! private `redis-server` from PATH and stops it at the end.
//!
//! ```text
//! cargo run --example erp
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use millrace::local::PrivateRedis;
use millrace::partitioner::partition_for_key;
use millrace::{Client, Config, Event, StartAt, TopicSpec, Worker, WorkerHandle};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error>;

const TENANTS: [&str; 10] = [
    "acme", "globex", "wayne", "stark", "wonka", "hooli", "nakatomi", "oscorp", "vandelay", "duff",
];
const ORDERS_PER_TENANT: u64 = 12; // 10 tenants × 12 orders × 3 events = 360 events

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    tenant: String,
    order: String,
    cents: u64,
}

#[derive(Serialize, Deserialize)]
struct InvoiceCreated {
    tenant: String,
    invoice: String,
    seq: u64, // 1, 2, 3, … per tenant, in publish order
    cents: u64,
}

#[derive(Serialize, Deserialize)]
struct PaymentReceived {
    tenant: String,
    invoice: String,
    cents: u64,
}

// The tenant is the key: a tenant's events stay in one partition, in order.
impl Event for OrderPlaced {
    const TOPIC: &'static str = "erp.v1.order.placed";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}
impl Event for InvoiceCreated {
    const TOPIC: &'static str = "erp.v1.invoice.created";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}
impl Event for PaymentReceived {
    const TOPIC: &'static str = "erp.v1.payment.received";
    fn key(&self) -> Option<String> {
        Some(self.tenant.clone())
    }
}

/// One tenant's day: its orders, then an invoice for each, then the payments.
/// Each publish is awaited, so the invoices go out in `seq` order.
async fn tenant_day(client: Client, tenant: &'static str) -> millrace::Result<usize> {
    let cents = |n: u64| 9_900 + 1_250 * n;
    for n in 1..=ORDERS_PER_TENANT {
        let order = OrderPlaced {
            tenant: tenant.into(),
            order: format!("so-{tenant}-{n}"),
            cents: cents(n),
        };
        client.publish(&order).await?;
    }
    for seq in 1..=ORDERS_PER_TENANT {
        let invoice = InvoiceCreated {
            tenant: tenant.into(),
            invoice: format!("inv-{tenant}-{seq}"),
            seq,
            cents: cents(seq),
        };
        client.publish(&invoice).await?;
    }
    for n in 1..=ORDERS_PER_TENANT {
        let payment = PaymentReceived {
            tenant: tenant.into(),
            invoice: format!("inv-{tenant}-{n}"),
            cents: cents(n),
        };
        client.publish(&payment).await?;
    }
    Ok(3 * ORDERS_PER_TENANT as usize)
}

/// A `pdf-report` member; `rendered` counts the invoices it rendered.
async fn pdf_member(client: &Client, rendered: Arc<AtomicUsize>) -> millrace::Result<WorkerHandle> {
    Worker::builder(client, "pdf-report")
        .start_at(StartAt::Earliest)
        .heartbeat_interval(Duration::from_millis(200)) // rebalance quickly for the demo
        .handle(move |_: InvoiceCreated, _| {
            let rendered = rendered.clone();
            async move {
                rendered.fetch_add(1, Relaxed); // pretend to render and store a PDF
                Ok(())
            }
        })
        .build()?
        .start()
        .await
}

/// Polls `done` every 20 ms until it holds; an error after `timeout`.
async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("gave up after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The partitions a one-topic worker owns.
fn owned(worker: &WorkerHandle) -> Vec<u32> {
    worker.owned().into_iter().flat_map(|(_, p)| p).collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (server, url) = PrivateRedis::from_env_or_start()?;
    if server.is_some() {
        println!("started a private redis-server at {url}");
    }
    let client = Client::connect(Config::new(&url)?.prefix("erp-example")?).await?;
    let topics = [
        (InvoiceCreated::TOPIC, 6),
        (OrderPlaced::TOPIC, 4),
        (PaymentReceived::TOPIC, 4),
    ];
    for (name, partitions) in topics {
        client.delete_topic(name).await?; // leftovers of an interrupted run
        let spec = TopicSpec::new(name, partitions)?;
        client.create_topic(&spec).await?;
    }

    // notification: per tenant, invoice seq numbers must come as 1, 2, 3, …
    let (emails, out_of_order) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let last_seq = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let (e, o) = (emails.clone(), out_of_order.clone());
    let notification = Worker::builder(&client, "notification")
        .start_at(StartAt::Earliest)
        .handle(move |inv: InvoiceCreated, _| {
            let (emails, out_of_order, last_seq) = (e.clone(), o.clone(), last_seq.clone());
            async move {
                let mut last = last_seq.lock().unwrap_or_else(PoisonError::into_inner);
                let prev = last.insert(inv.tenant.clone(), inv.seq).unwrap_or(0);
                if inv.seq != prev + 1 {
                    out_of_order.fetch_add(1, Relaxed);
                    eprintln!("out of order: {} seq {} after {prev}", inv.tenant, inv.seq);
                }
                if emails.fetch_add(1, Relaxed) < 3 {
                    println!("  email to billing@{}: {}", inv.tenant, inv.invoice);
                }
                Ok(())
            }
        })
        .build()?
        .start()
        .await?;

    // pdf-report: two members share the six invoice partitions.
    let rendered = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let pdf = [
        pdf_member(&client, rendered[0].clone()).await?,
        pdf_member(&client, rendered[1].clone()).await?,
    ];

    // audit: one worker, three handlers. Nothing to await, so each handler
    // counts right away and returns a ready future.
    let audited: Arc<[AtomicUsize; 3]> = Arc::default(); // orders, invoices, payments
    let (a1, a2, a3) = (audited.clone(), audited.clone(), audited.clone());
    let audit = Worker::builder(&client, "audit")
        .start_at(StartAt::Earliest)
        .handle(move |_: OrderPlaced, _| {
            a1[0].fetch_add(1, Relaxed);
            async { Ok(()) }
        })
        .handle(move |_: InvoiceCreated, _| {
            a2[1].fetch_add(1, Relaxed);
            async { Ok(()) }
        })
        .handle(move |_: PaymentReceived, _| {
            a3[2].fetch_add(1, Relaxed);
            async { Ok(()) }
        })
        .build()?
        .start()
        .await?;

    let limit = Duration::from_secs(20);
    let shared_out = || {
        let (p1, p2) = (owned(&pdf[0]), owned(&pdf[1]));
        p1.len() == 3 && p2.len() == 3 && p1.iter().all(|p| !p2.contains(p))
    };
    wait_until("pdf-report to rebalance", limit, shared_out).await?;
    for (i, member) in pdf.iter().enumerate() {
        let (n, id, parts) = (i + 1, member.member_id(), owned(member));
        println!("pdf-report member {n} ({id}) owns invoice partitions {parts:?}");
    }

    // The producers: one task per tenant, all at once.
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for tenant in TENANTS {
        producers.spawn(tenant_day(client.clone(), tenant));
    }
    let mut published = 0;
    while let Some(events) = producers.join_next().await {
        published += events??;
    }
    let ms = |since: Instant| since.elapsed().as_millis();
    println!("published {published} events in {} ms", ms(started));

    let sum = |n: &[Arc<AtomicUsize>]| n.iter().map(|n| n.load(Relaxed)).sum::<usize>();
    let audited_sum = || audited.iter().map(|n| n.load(Relaxed)).sum::<usize>();
    let invoices = TENANTS.len() * ORDERS_PER_TENANT as usize;
    let caught_up = || {
        emails.load(Relaxed) >= invoices && sum(&rendered) >= invoices && audited_sum() >= published
    };
    wait_until("every group to see every event", limit, caught_up).await?;
    println!("every group saw every event after {} ms", ms(started));

    let stopping = Instant::now();
    let parts = pdf.each_ref().map(owned);
    let [pdf_1, pdf_2] = pdf;
    let workers = [notification, pdf_1, pdf_2, audit];
    try_join_all(workers.map(WorkerHandle::shutdown)).await?;
    println!("workers shut down gracefully in {} ms\n", ms(stopping));

    // A partition carries whole tenants, so the split follows the keys.
    let member = |i: usize| {
        let mine = |t: &&str| parts[i].contains(&partition_for_key(t, 6));
        let tenants = TENANTS.into_iter().filter(mine).count();
        let (m, n, p) = (i + 1, rendered[i].load(Relaxed), &parts[i]);
        format!("member {m}: {n} (partitions {p:?}, {tenants}/10 tenants)")
    };
    let (emailed, out_of_order) = (emails.load(Relaxed), out_of_order.load(Relaxed));
    let (pdfs, split) = (sum(&rendered), format!("{}, {}", member(0), member(1)));
    let [orders, invoiced, paid] = audited.each_ref().map(|n| n.load(Relaxed));
    let audits = orders + invoiced + paid;
    println!("group         events  detail");
    println!("notification  {emailed:>6}  {out_of_order} out of order");
    println!("pdf-report    {pdfs:>6}  {split}");
    println!("audit         {audits:>6}  {orders} orders, {invoiced} invoices, {paid} payments");

    for (name, _) in topics {
        client.delete_topic(name).await?;
    }
    if out_of_order > 0 {
        return Err(format!("{out_of_order} invoices arrived out of order").into());
    }
    Ok(())
}
