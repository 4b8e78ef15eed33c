//! Request and reply: a pricing service answers quotes published to
//! `shop.v1.price.quote`; a caller sends a request and waits for the
//! answer of the `pricing` group (other groups of the topic see an
//! ordinary message). A handler's failure comes back as
//! `Error::RequestFailed`; no live member of the group, as
//! `Error::NoResponders` at once.
//!
//! Uses the Redis in `MILLRACE_REDIS_URL` if set (under the prefix
//! `request-example`); otherwise a private `redis-server` from PATH.
//!
//! ```text
//! cargo run --example request_reply
//! ```

use std::time::Duration;

use millrace::local::PrivateRedis;
use millrace::{Client, Config, Error, HandlerError, TopicSpec, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Quote {
    sku: String,
    quantity: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, url) = PrivateRedis::from_env_or_start()?;
    let client = Client::connect(Config::new(&url)?.prefix("request-example")?).await?;
    let topic = "shop.v1.price.quote";
    client.create_topic(&TopicSpec::new(topic, 2)?).await?;

    // Nobody answers yet: the caller knows at once.
    let early = client
        .request::<_, u64>(
            topic,
            &Quote {
                sku: "A-1".into(),
                quantity: 1,
            },
        )
        .group("pricing")
        .timeout(Duration::from_secs(2))
        .await;
    match early {
        Err(Error::NoResponders { .. }) => println!("before the service runs: no responders"),
        other => return Err(format!("expected NoResponders, got {other:?}").into()),
    }

    // The pricing service: its Ok value is the reply.
    let pricing = Worker::builder(&client, "pricing")
        .handle_raw(topic, |msg, _ctx| async move {
            let q: Quote = msg
                .decode()
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            if q.quantity == 0 {
                return Err(HandlerError::permanent("quantity must be at least 1"));
            }
            let unit = if q.sku.starts_with('A') { 1250 } else { 990 };
            Ok(unit * q.quantity)
        })
        .start()
        .await?;

    let price: millrace::Reply<u64> = client
        .request(
            topic,
            &Quote {
                sku: "A-1".into(),
                quantity: 12,
            },
        )
        .group("pricing")
        .timeout(Duration::from_secs(5))
        .await?;
    println!(
        "12 × A-1: {} cents (message {})",
        price.value, price.message_id
    );
    assert_eq!(price.value, 15_000);

    let refused = client
        .request::<_, u64>(
            topic,
            &Quote {
                sku: "B-2".into(),
                quantity: 0,
            },
        )
        .group("pricing")
        .timeout(Duration::from_secs(5))
        .await;
    match refused {
        Err(Error::RequestFailed { error, .. }) => println!("0 × B-2: refused: {error}"),
        other => return Err(format!("expected RequestFailed, got {other:?}").into()),
    }

    pricing.shutdown().await?;
    client.delete_topic(topic).await?;
    Ok(())
}
