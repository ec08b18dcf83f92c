//! `tern`: the command-line tool for a Tern broker.
//!
//! Owns: argument parsing and dispatch, one module per subcommand (`publish` for
//! `tern pub`, `subscribe` for `tern sub`, `request` for `tern req`, `reply`, `top`), plus
//! what they share: connecting (`connect`), printing messages (`output`) and reading
//! durations and times (`time`).
//!
//! Never: links the broker. It talks to a running `ternd` over the network only: the data
//! commands through `tern-client` on the binary port, `top` through the monitoring
//! endpoint. Errors end the process with a one-line message on stderr (each cause said
//! once) and exit status 1.

mod connect;
mod http;
mod output;
mod publish;
mod reply;
mod request;
mod subscribe;
mod time;
mod top;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "Tools for a Tern broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish messages: MSG, or one message per line of stdin. Waits for the broker's
    /// acknowledgements before exiting.
    Pub(publish::PubArgs),
    /// Subscribe and print messages (one JSON object per line with --json).
    Sub(subscribe::SubArgs),
    /// Send a request and print the reply.
    Req(request::ReqArgs),
    /// Answer requests on a subject with a fixed message.
    Reply(reply::ReplyArgs),
    /// A live view of a broker from its monitoring endpoint: rates, connections, drops,
    /// latency percentiles, bridges to NATS clusters.
    Top(top::TopArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pub(args) => publish::run(&args),
        Command::Sub(args) => subscribe::run(&args),
        Command::Req(args) => request::run(&args),
        Command::Reply(args) => reply::run(&args),
        Command::Top(args) => top::run(&args),
    };
    if let Err(e) = result {
        eprintln!("tern: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once. Most errors already include
/// their cause's text (`cannot connect to X: connection refused`), so a cause already in
/// the message before it is skipped, and a cause that repeats a context and adds to it
/// replaces it.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        match parts.last_mut() {
            Some(last) if last.contains(&text) => {}
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tern").chain(args.iter().copied()))
    }

    fn auth_of(cli: &Cli) -> &connect::AuthArgs {
        match &cli.command {
            Command::Pub(a) => &a.server.auth,
            Command::Sub(a) => &a.server.auth,
            Command::Req(a) => &a.server.auth,
            Command::Reply(a) => &a.server.auth,
            Command::Top(_) => panic!("top does not connect to the binary port"),
        }
    }

    #[test]
    fn every_data_command_takes_the_credentials() {
        for command in [
            &["pub", "a.b", "hi"][..],
            &["sub", "a.>"],
            &["req", "a.b", "hi"],
            &["reply", "a.b", "hi"],
        ] {
            let mut args = command.to_vec();
            args.extend([
                "--user", "alice", "--pass", "pw", "--token", "t", "--nkey", "u.nk",
            ]);
            let cli = parse(&args).unwrap_or_else(|e| panic!("{command:?}: {e}"));
            let auth = auth_of(&cli);
            assert_eq!(auth.user.as_deref(), Some("alice"));
            assert_eq!(auth.pass.as_deref(), Some("pw"));
            assert_eq!(auth.token.as_deref(), Some("t"));
            assert_eq!(auth.nkey.as_deref(), Some(std::path::Path::new("u.nk")));

            let mut args = command.to_vec();
            args.extend(["--creds", "u.creds"]);
            let cli = parse(&args).unwrap();
            assert_eq!(
                auth_of(&cli).creds.as_deref(),
                Some(std::path::Path::new("u.creds"))
            );
        }
    }

    #[test]
    fn a_password_needs_a_user_and_the_reverse() {
        let e = parse(&["pub", "a.b", "hi", "--pass", "pw"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--user"), "{e}");
        let e = parse(&["pub", "a.b", "hi", "--user", "alice"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn nkey_and_creds_are_exclusive() {
        let e = parse(&["sub", "a", "--nkey", "u.nk", "--creds", "u.creds"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn the_help_lists_the_credentials() {
        let e = parse(&["pub", "--help"]).unwrap_err();
        let help = e.to_string();
        for flag in [
            "--user <USER>",
            "--pass <PASS>",
            "--token <TOKEN>",
            "--nkey <SEED_FILE>",
            "--creds <FILE>",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        assert!(help.contains("Authentication"), "{help}");
    }

    #[test]
    fn debug_output_never_shows_a_password_or_token() {
        let cli = parse(&[
            "pub",
            "a.b",
            "hi",
            "--user",
            "alice",
            "--pass",
            "pw-s3cret",
            "--token",
            "tok-s3cret",
        ])
        .unwrap();
        let text = format!("{cli:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("alice"), "{text}");
    }

    #[test]
    fn an_unreadable_or_invalid_nkey_file_is_named() {
        let dir = std::env::temp_dir().join(format!("tern-cli-nkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // What `tern pub` says when its --nkey file is `file`.
        let error_with = |file: &std::path::Path| {
            let arg = file.display().to_string();
            let server = ["--server", "tern://127.0.0.1:1", "--nkey", &arg];
            let cli = parse(&[&["pub", "a.b", "hi"][..], &server[..]].concat()).unwrap();
            let Command::Pub(args) = &cli.command else {
                unreachable!()
            };
            one_line(&connect::one_shot(&args.server, "pub").unwrap_err())
        };
        let text = error_with(&dir.join("missing.nk"));
        assert!(text.contains("missing.nk"), "{text}");

        let bad = dir.join("bad.nk");
        std::fs::write(&bad, "SUnotaseed\n").unwrap();
        let text = error_with(&bad);
        assert!(
            text.contains("bad.nk") && text.contains("invalid"),
            "{text}"
        );
        assert!(!text.contains("SUnotaseed"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn causes_already_in_the_message_are_said_once() {
        use anyhow::Context;
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e: anyhow::Error = tern_client::Error::Connect {
            server: "tern://h:1".to_string(),
            source: io(),
        }
        .into();
        let e = e.context("cannot connect to tern://h:1");
        assert_eq!(one_line(&e), "cannot connect to tern://h:1: no such file");
        let e = Err::<(), _>(io())
            .context("reading x.pem")
            .context("loading")
            .unwrap_err();
        assert_eq!(one_line(&e), "loading: reading x.pem: no such file");
    }
}
