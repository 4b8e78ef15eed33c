//! A web service that publishes an event from an axum handler: `POST
//! /invoices` with a JSON invoice publishes `erp.v1.invoice.created` and
//! answers with the message id. One `Client` is shared by every request
//! (it is cheap to clone; concurrent publishes share pipelines).
//!
//! The example starts the server, posts three invoices to itself, reads
//! them back from the topic and exits. Uses the Redis in
//! `MILLRACE_REDIS_URL` if set (under the prefix `web-example`); otherwise
//! a private `redis-server` from PATH.
//!
//! ```text
//! cargo run --example web_publisher
//! ```

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use millrace::local::PrivateRedis;
use millrace::{Client, Config, Event, StartAt, TopicSpec};
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

/// `POST /invoices`: publishes the invoice; 202 with its message id, or
/// 503 when Redis cannot take it (the caller retries).
async fn create_invoice(
    State(client): State<Client>,
    Json(invoice): Json<InvoiceCreated>,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    match client.publish(&invoice).await {
        Ok(receipt) => Ok((StatusCode::ACCEPTED, receipt.message_id.to_string())),
        Err(e) if e.is_invalid_input() => Err((StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, url) = PrivateRedis::from_env_or_start()?;
    let client = Client::connect(Config::new(&url)?.prefix("web-example")?).await?;
    client
        .create_topic(&TopicSpec::new(InvoiceCreated::TOPIC, 4)?)
        .await?;

    let app = Router::new()
        .route("/invoices", post(create_invoice))
        .with_state(client.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("listening on http://{addr}");

    // Three requests, as another service would send them.
    for (i, tenant) in ["acme", "globex", "acme"].iter().enumerate() {
        let body =
            serde_json::json!({"invoice": format!("inv-{i}"), "tenant": tenant, "cents": 1000 + i});
        let answer = post_json(addr, "/invoices", &body.to_string()).await?;
        println!("POST /invoices {} -> {answer}", body);
    }

    let mut reader = client
        .reader(InvoiceCreated::TOPIC, StartAt::Earliest)
        .await?;
    let mut seen = 0;
    while let Some(msg) = reader.next().await? {
        let invoice: InvoiceCreated = msg.decode()?;
        println!("in the topic: {} {invoice:?}", msg.message_id);
        seen += 1;
    }
    assert_eq!(seen, 3, "every request published one event");
    server.abort();
    client.delete_topic(InvoiceCreated::TOPIC).await?;
    println!("done: 3 invoices published through the web handler");
    Ok(())
}

/// A minimal HTTP/1.0 POST (the example needs no HTTP client crate).
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out.lines().next().unwrap_or("").to_string();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(format!("{status}: {body}"))
}
