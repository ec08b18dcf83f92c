//! Request and reply: a small service and its callers.
//!
//! ```sh
//! cargo run -p tern-client --example request_reply [-- tern://127.0.0.1:4224]
//! ```
//!
//! Two responders join the queue group `adders` on `math.add`, so each request is
//! answered by one of them. The caller sends a few requests, then asks a subject nobody
//! serves, and a slow one, to show how the answers that do not come are reported.

use std::time::Duration;

use tern_client::{Client, Error};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tern://127.0.0.1:4224".to_string());
    let client = Client::connect(&server)?;

    for worker in 0..2 {
        let sub = client.queue_subscribe("math.add", "adders")?;
        let client = client.clone();
        std::thread::spawn(move || {
            for request in &sub {
                let text = String::from_utf8_lossy(&request.payload).into_owned();
                let sum: i64 = text
                    .split_whitespace()
                    .filter_map(|n| n.parse::<i64>().ok())
                    .sum();
                let answer = format!("{sum} (worker {worker})");
                if let Err(e) = client.respond(&request, answer) {
                    eprintln!("worker {worker}: cannot answer: {e}");
                }
            }
        });
    }
    let _slow = client.subscribe("math.slow")?; // Subscribed, never answers.
                                                // Make sure the broker has the subscriptions before the first request.
    client.flush(Duration::from_secs(2))?;

    for question in ["1 2", "40 2", "-5 5 10"] {
        let reply = client.request("math.add", question, Duration::from_secs(2))?;
        println!("{question} = {}", String::from_utf8_lossy(&reply.payload));
    }
    // A broker that knows nobody is subscribed may say so at once (NoResponders);
    // otherwise the request times out.
    match client.request("math.mul", "2 3", Duration::from_millis(500)) {
        Err(Error::NoResponders { subject }) => println!("nobody serves {subject}"),
        Err(Error::Timeout) => println!("no answer from math.mul within 500 ms"),
        other => println!("math.mul: {other:?}"),
    }
    match client.request("math.slow", "1", Duration::from_millis(200)) {
        Err(Error::Timeout) => println!("math.slow did not answer within 200 ms"),
        other => println!("math.slow: {other:?}"),
    }
    client.drain(Duration::from_secs(2))?;
    Ok(())
}
