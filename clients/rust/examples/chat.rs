//! A terminal chat room on a Tern broker.
//!
//! ```sh
//! cargo run -p tern-client --example chat -- lobby alice            # terminal 1
//! cargo run -p tern-client --example chat -- lobby bob              # terminal 2
//! cargo run -p tern-client --example chat -- lobby carol tern://host:4224
//! ```
//!
//! Every line typed is published to `chat.<room>` with a `From` header; every message in
//! the room from someone else is printed. Connection events (a broker restart, say) are
//! printed too: the client reconnects by itself, and lines typed while the broker is away
//! are sent once it is back.

use std::io::BufRead;
use std::time::Duration;

use tern_client::{Client, Event, PublishOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (room, name) = match (args.first(), args.get(1)) {
        (Some(room), Some(name)) => (room.clone(), name.clone()),
        _ => {
            eprintln!("usage: chat ROOM NAME [SERVER]");
            std::process::exit(2);
        }
    };
    let server = args.get(2).map_or("tern://127.0.0.1:4224", String::as_str);
    let subject = format!("chat.{room}");

    let client = Client::builder()
        .name(format!("chat:{name}"))
        .connect(server)?;

    let events = client.events();
    std::thread::spawn(move || {
        for event in events {
            match event {
                Event::Disconnected { reason } => eprintln!("* disconnected: {reason}"),
                Event::Reconnected(_) => eprintln!("* reconnected"),
                Event::Dropped { count, .. } => eprintln!("* {count} messages dropped"),
                _ => {}
            }
        }
    });

    let sub = client.subscribe(&subject)?;
    let me = name.clone();
    std::thread::spawn(move || {
        for msg in &sub {
            let from = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("From"))
                .unwrap_or("?");
            if from != me {
                println!("{from}: {}", String::from_utf8_lossy(&msg.payload));
            }
        }
    });

    eprintln!("* in room {room} as {name}; type lines, Ctrl-D to leave");
    let opts = PublishOptions::new().header("From", name);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if let Err(e) = client.publish_with(&subject, line, &opts) {
            eprintln!("* not sent: {e}");
        }
    }
    client.drain(Duration::from_secs(2))?;
    Ok(())
}
