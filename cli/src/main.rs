//! postern: send mail over SMTP with OAuth2, fetch and inspect tokens,
//! and diagnose a Microsoft 365, Google or generic OAuth2 set-up step by step.
#![forbid(unsafe_code)]
// A command-line tool: standard output is its interface.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod authorize;
mod config;
mod demo;
mod diagnose;
mod emailproxy;
mod fail;
mod proxy;
mod send;
mod setup;
mod token;

/// Send mail over SMTP with OAuth2 (XOAUTH2, OAUTHBEARER) or a password, and
/// find out which part of a Microsoft 365 / Google / OAuth2 set-up is wrong.
///
/// Settings come from flags, then environment variables (POSTERN_HOST, ...),
/// then a profile in the config file (~/.config/postern/config.toml, or
/// --config) chosen with --profile. Secrets are never given on the command
/// line: name an environment variable (--client-secret-env VAR), a file, or
/// ask for a prompt.
///
/// Exit codes: 0 every recipient accepted; 1 other error; 2 usage or
/// configuration; 3 connection, TLS or SMTP session; 4 token request or
/// authentication; 5 message or recipient refused.
#[derive(Parser, Debug)]
#[command(name = "postern", version, about, long_about)]
struct Cli {
    /// Log protocol steps to standard error (repeat for more detail).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send a message (built from flags, or an RFC 5322 file as is).
    Send(send::SendArgs),
    /// Fetch an access token and show its lifetime and mail-related claims.
    Token(token::TokenArgs),
    /// Check the whole chain step by step: configuration, token, claims, TCP,
    /// TLS, EHLO, AUTH, and optionally a test message. Names the setup step
    /// to fix on the first failure.
    Diagnose(diagnose::DiagnoseArgs),
    /// Sign a user in once (browser with PKCE, or device code) and store the
    /// refresh token in a file only you can read.
    Authorize(authorize::AuthorizeArgs),
    /// Run the whole flow against a built-in token endpoint and SMTP server
    /// on loopback: no network, no account needed.
    Demo,
    /// Run a local submission proxy: applications log in with a local
    /// password (AUTH PLAIN/LOGIN) and their mail goes upstream with OAuth2.
    Proxy(proxy::ProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The proxy is a service: its log (a line per transaction) is on at
    // INFO without -v.
    let service = matches!(cli.command, Command::Proxy(_));
    if cli.verbose > 0 || service {
        let level = match cli.verbose {
            0 => tracing_subscriber::filter::LevelFilter::INFO,
            1 => tracing_subscriber::filter::LevelFilter::DEBUG,
            _ => tracing_subscriber::filter::LevelFilter::TRACE,
        };
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::from(fail::Class::Other as u8);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Send(a) => send::run(a).await,
            Command::Token(a) => token::run(a).await,
            Command::Diagnose(a) => diagnose::run(a).await,
            Command::Authorize(a) => authorize::run(a).await,
            Command::Demo => demo::run().await,
            Command::Proxy(a) => proxy::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("postern: {}", f.message);
            ExitCode::from(f.class as u8)
        }
    }
}
