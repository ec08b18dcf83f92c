//! Helpers for the tests that drive brokers with a real NATS client library (async-nats):
//! a test's deadline, a round trip on one connection, the next message.
//!
//! A subscriber is ready at its server when a round trip on its own connection has
//! completed ([`sync`]): async-nats' `flush()` only writes the socket, it does not wait for
//! the server's `PONG`.

use std::future::Future;
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;

/// The longest wait for one expected message.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .expect("test did not finish in time")
}

/// A round trip through the server on `client`'s connection: when it returns, the server
/// has processed everything the client sent before.
pub async fn sync(client: &Client) {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, "sync".into()).await.unwrap();
    client.flush().await.unwrap();
    next(&mut echo).await;
    echo.unsubscribe().await.unwrap();
}

/// The next message of `sub`; fails on timeout or when the subscription ended.
pub async fn next(sub: &mut Subscriber) -> Message {
    match tokio::time::timeout(MSG_TIMEOUT, sub.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no message within {MSG_TIMEOUT:?}"),
    }
}
