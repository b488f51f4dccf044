//! `postern proxy`: a local submission proxy for applications that only
//! speak SMTP with a password. The configuration (TOML) maps listeners to
//! an upstream server and local accounts to upstream credentials; the
//! relaying itself is `postern-proxy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use postern_proxy::{Account, LocalTls, NoTls, Proxy, ProxySettings, Upstream, hash_password};
use postern_tokio::smtp::{ServerConfig, ServerSecurity};
use postern_tokio::{Mailbox, PoolConfig, Tokio};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::config::Settings;
use crate::fail::{Failure, usage};
use crate::setup;

/// Arguments of `postern proxy`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ProxyArgs {
    #[command(subcommand)]
    action: Option<ProxyAction>,
    /// The proxy configuration (TOML): listeners and accounts.
    #[arg(long, value_name = "FILE", env = "POSTERN_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Import an email-oauth2-proxy configuration (emailproxy.config)
    /// instead: prints what was taken, fixed, ignored and wrong, and starts
    /// only when nothing is wrong. Each account section needs
    /// `postern_password_hash = ...` (from `postern proxy hash-password`).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    emailproxy_config: Option<PathBuf>,
    /// Validate the configuration, fetch one token per account and connect
    /// upstream once; exit non-zero naming the first failing step.
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand, Debug)]
enum ProxyAction {
    /// Print the Argon2 hash of a local password (read from standard input,
    /// or from --password-env) for an account's `password_hash`.
    HashPassword {
        /// Environment variable holding the password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
}

/// The configuration file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ProxyFile {
    #[serde(default)]
    proxy: ProxyOptions,
    #[serde(rename = "listener", default)]
    listeners: Vec<ListenerConfig>,
    #[serde(rename = "account", default)]
    accounts: Vec<AccountConfig>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
struct ProxyOptions {
    /// The name in the greeting and EHLO reply.
    hostname: String,
    /// Upstream connections per mailbox (Exchange Online allows 3).
    max_upstream_connections: usize,
    /// The largest message taken, octets (advertised as SIZE).
    max_message_size: u64,
    /// How long a verified local password is remembered, seconds.
    auth_cache_seconds: u64,
    /// Seconds given to sessions in flight at shutdown.
    shutdown_grace_seconds: u64,
    /// Local sessions open at once, over all listeners; more are answered
    /// `421 4.3.2` and closed.
    max_sessions: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            hostname: "postern-proxy".into(),
            max_upstream_connections: 3,
            max_message_size: 35 * 1024 * 1024,
            auth_cache_seconds: 900,
            shutdown_grace_seconds: 30,
            max_sessions: 256,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ListenerConfig {
    /// `127.0.0.1:2465`.
    listen: String,
    /// `none`, `starttls` or `implicit`.
    #[serde(default = "none")]
    local_tls: String,
    /// Certificate chain (PEM) for local TLS.
    certificate: Option<PathBuf>,
    /// Private key (PEM) for local TLS.
    private_key: Option<PathBuf>,
    /// Upstream server settings (host, port, tls, ca_file, ...: the keys of a
    /// `postern send` profile).
    upstream: Settings,
}

fn none() -> String {
    "none".into()
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AccountConfig {
    /// `app@example.com`, `@example.com` or `@`.
    name: String,
    /// From `postern proxy hash-password`.
    password_hash: String,
    /// Other senders this account may use.
    #[serde(default)]
    aliases: Vec<String>,
    /// Upstream credentials (provider, tenant, client_id,
    /// client_secret_env, refresh_token_file, password_env, ...).
    #[serde(default)]
    upstream: Settings,
}

/// One listener, ready to accept.
struct Bound {
    listener: TcpListener,
    proxy: Proxy<Tokio>,
    config: ServerConfig,
    tls: Option<Acceptor>,
    implicit: bool,
    address: SocketAddr,
}

pub(crate) async fn run(args: ProxyArgs) -> Result<(), Failure> {
    if let Some(ProxyAction::HashPassword { password_env }) = args.action {
        return hash(password_env.as_deref());
    }
    let file = match (args.config, args.emailproxy_config) {
        (Some(path), _) => read(&path)?,
        (None, Some(path)) => import(&path)?,
        (None, None) => {
            return Err(usage(
                "--config FILE or --emailproxy-config FILE is required (see `postern proxy --help`)",
            ));
        }
    };
    if args.check {
        return check(&file).await;
    }
    let bound = bind(&file).await?;
    let grace = Duration::from_secs(file.proxy.shutdown_grace_seconds);
    serve(bound, grace, file.proxy.max_sessions.max(1)).await
}

fn hash(password_env: Option<&str>) -> Result<(), Failure> {
    let password = match password_env {
        Some(var) => std::env::var(var).map_err(|_| usage(format!("${var} is not set")))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| usage(format!("reading the password: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.len() < 8 {
        return Err(usage("the local password must have at least 8 characters"));
    }
    let hash = hash_password(&password).map_err(usage)?;
    println!("{hash}");
    Ok(())
}

fn read(path: &Path) -> Result<ProxyFile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let file: ProxyFile =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    if file.listeners.is_empty() {
        return Err(usage(format!("{}: no [[listener]]", path.display())));
    }
    if file.accounts.is_empty() {
        return Err(usage(format!("{}: no [[account]]", path.display())));
    }
    Ok(file)
}

/// `--emailproxy-config`: the import, its report on standard error.
fn import(path: &Path) -> Result<ProxyFile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let imported = crate::emailproxy::import(&text);
    eprintln!("postern proxy: importing {}", path.display());
    for note in &imported.notes {
        eprintln!("  {note}");
    }
    if imported.has_wrong() {
        return Err(usage(format!(
            "{}: correct the lines marked WRONG above (nothing was started)",
            path.display()
        )));
    }
    Ok(ProxyFile {
        proxy: ProxyOptions::default(),
        listeners: imported
            .listeners
            .into_iter()
            .map(|l| ListenerConfig {
                listen: l.listen,
                local_tls: l.local_tls.to_owned(),
                certificate: l.certificate.map(PathBuf::from),
                private_key: l.private_key.map(PathBuf::from),
                upstream: l.upstream,
            })
            .collect(),
        accounts: imported
            .accounts
            .into_iter()
            .map(|a| AccountConfig {
                name: a.name,
                password_hash: a.password_hash,
                aliases: a.aliases,
                upstream: a.upstream,
            })
            .collect(),
    })
}

/// The local TLS mode of a listener.
fn local_security(l: &ListenerConfig) -> Result<ServerSecurity, Failure> {
    match l.local_tls.as_str() {
        "none" => Ok(ServerSecurity::Plaintext),
        "starttls" => Ok(ServerSecurity::StartTls),
        "implicit" => Ok(ServerSecurity::ImplicitTls),
        other => Err(usage(format!(
            "listener {}: local_tls = {other:?}: use none, starttls or implicit",
            l.listen
        ))),
    }
}

/// The settings of `account` behind `listener`, for the mailbox `user`.
fn upstream_settings(
    listener: &ListenerConfig,
    account: &AccountConfig,
    user: &str,
) -> Result<Settings, Failure> {
    let mut s = account.upstream.clone();
    s.fill_from(&listener.upstream)?;
    if s.user.is_none() {
        s.user = Some(user.to_owned());
    }
    s.resolve()
}

fn is_catch_all(name: &str) -> bool {
    name.starts_with('@')
}

fn accounts(file: &ProxyFile, listener: &ListenerConfig) -> Result<Vec<Account<Tokio>>, Failure> {
    let pool = PoolConfig::default().max_connections(file.proxy.max_upstream_connections.max(1));
    let mut out = Vec::new();
    for a in &file.accounts {
        let aliases = a
            .aliases
            .iter()
            .map(|s| {
                Mailbox::parse(s)
                    .map_err(|e| usage(format!("account {}: alias {s:?}: {e}", a.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if is_catch_all(&a.name) && a.upstream.refresh_token_file.is_some() {
            // One transport per mailbox would each redeem and rotate the
            // same refresh token, and all but one would lose it.
            return Err(usage(format!(
                "account {}: a catch-all account cannot use one user's refresh_token_file; list the mailbox as its own account",
                a.name
            )));
        }
        let upstream = if is_catch_all(&a.name) {
            // Checked now with a stand-in mailbox, built per login later.
            let probe = format!(
                "postmaster{}",
                if a.name == "@" {
                    "@example.com"
                } else {
                    &a.name
                }
            );
            drop(setup::builder_with(&upstream_settings(listener, a, &probe)?, None)?.build()?);
            let listener_settings = listener.upstream.clone();
            let account_settings = a.upstream.clone();
            Upstream::PerMailbox(Arc::new(move |user: &str| {
                let mut s = account_settings.clone();
                let fail = |f: Failure| postern_tokio::Error::Config(f.message);
                s.fill_from(&listener_settings).map_err(fail)?;
                if s.user.is_none() {
                    s.user = Some(user.to_owned());
                }
                let s = s.resolve().map_err(fail)?;
                setup::builder_with(&s, None)
                    .map_err(fail)?
                    .pool(pool)
                    .build()
            }))
        } else {
            let s = upstream_settings(listener, a, &a.name)?;
            Upstream::One(setup::builder_with(&s, None)?.pool(pool).build()?)
        };
        out.push(Account::new(a.name.clone(), a.password_hash.clone(), upstream).aliases(aliases));
    }
    Ok(out)
}

async fn bind(file: &ProxyFile) -> Result<Vec<Bound>, Failure> {
    let mut bound = Vec::new();
    for l in &file.listeners {
        let security = local_security(l)?;
        let address: SocketAddr = l
            .listen
            .parse()
            .map_err(|e| usage(format!("listener {:?}: {e} (use ADDRESS:PORT)", l.listen)))?;
        let loopback = address.ip().is_loopback();
        if !loopback && security == ServerSecurity::Plaintext {
            return Err(usage(format!(
                "listener {address}: a non-loopback listener needs local TLS (local_tls = \"starttls\" or \"implicit\" with a certificate)"
            )));
        }
        let tls = match (security, &l.certificate, &l.private_key) {
            (ServerSecurity::Plaintext, _, _) => None,
            (_, Some(cert), Some(key)) => Some(Acceptor::load(cert, key)?),
            _ => {
                return Err(usage(format!(
                    "listener {address}: local TLS needs certificate and private_key"
                )));
            }
        };
        let settings = ProxySettings::default()
            .auth_cache_ttl(Duration::from_secs(file.proxy.auth_cache_seconds));
        let proxy = Proxy::new(Tokio, accounts(file, l)?, settings).map_err(usage)?;
        let config = ServerConfig::default()
            .hostname(file.proxy.hostname.clone())
            .security(security)
            // AUTH without TLS only on a plaintext loopback listener.
            .plaintext_auth(loopback && security == ServerSecurity::Plaintext)
            .max_message_size(Some(file.proxy.max_message_size));
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| usage(format!("cannot listen on {address}: {e}")))?;
        let address = listener.local_addr().unwrap_or(address);
        bound.push(Bound {
            listener,
            proxy,
            config,
            implicit: security == ServerSecurity::ImplicitTls,
            tls,
            address,
        });
    }
    Ok(bound)
}

async fn serve(bound: Vec<Bound>, grace: Duration, max_sessions: usize) -> Result<(), Failure> {
    let tracker = tokio_util::task::TaskTracker::new();
    let sessions = Arc::new(tokio::sync::Semaphore::new(max_sessions));
    let mut proxies = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for b in bound {
        eprintln!(
            "postern proxy: listening on {} ({})",
            b.address,
            if b.tls.is_none() {
                "plaintext, loopback"
            } else if b.implicit {
                "implicit TLS"
            } else {
                "STARTTLS"
            }
        );
        proxies.push(b.proxy.clone());
        let tracker2 = tracker.clone();
        let sessions = Arc::clone(&sessions);
        let mut stop = stop_rx.clone();
        tracker.spawn(async move {
            let tls = b.tls.map(Arc::new);
            loop {
                let accepted = tokio::select! {
                    a = b.listener.accept() => a,
                    _ = stop.changed() => break,
                };
                let Ok((mut stream, _peer)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = Arc::clone(&sessions).try_acquire_owned() else {
                    tracing::warn!(max_sessions, "session limit reached; refusing a connection");
                    tracker2.spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream
                            .write_all(b"421 4.3.2 Too many sessions, try again later\r\n")
                            .await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                let proxy = b.proxy.clone();
                let config = b.config.clone();
                let tls = tls.clone();
                let implicit = b.implicit;
                tracker2.spawn(async move {
                    let _permit = permit;
                    match (implicit, tls) {
                        (true, Some(tls)) => match tls.accept(stream.compat()).await {
                            Ok(tls_stream) => proxy.serve(tls_stream, config, None::<&NoTls>).await,
                            Err(e) => tracing::info!(error = %e, "local TLS handshake failed"),
                        },
                        (_, Some(tls)) => proxy.serve(stream.compat(), config, Some(&*tls)).await,
                        (_, None) => proxy.serve(stream.compat(), config, None::<&NoTls>).await,
                    }
                });
            }
        });
    }
    tracker.close();
    shutdown_signal().await;
    eprintln!("postern proxy: stopping; finishing the sessions in flight");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        eprintln!(
            "postern proxy: sessions still open after {} s; closing",
            grace.as_secs()
        );
    }
    for p in proxies {
        p.shutdown().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `--check`: every account behind every listener, step by step.
async fn check(file: &ProxyFile) -> Result<(), Failure> {
    for l in &file.listeners {
        local_security(l)?;
        for a in &file.accounts {
            postern_proxy::check_hash(&a.password_hash)
                .map_err(|e| usage(format!("account {}: password_hash: {e}", a.name)))?;
            let probe = if is_catch_all(&a.name) {
                None
            } else {
                Some(a.name.as_str())
            };
            let user = probe.unwrap_or("postmaster@example.com");
            let s = upstream_settings(l, a, user)?;
            let transport = setup::transport(&s)?;
            match probe {
                Some(_) => {
                    transport
                        .check()
                        .await
                        .map_err(|e| step_failed(&a.name, l, e))?;
                    println!(
                        "ok   {} via {}: token, TLS, AUTH upstream",
                        a.name, l.listen
                    );
                }
                None => {
                    if let Some(oauth) = setup::oauth(&s)? {
                        postern_tokio::fetch_token(&oauth, &setup::tls_options(&s)?)
                            .await
                            .map_err(|e| step_failed(&a.name, l, e))?;
                        println!(
                            "ok   {} via {}: token (catch-all: AUTH is checked per mailbox)",
                            a.name, l.listen
                        );
                    } else {
                        println!("ok   {} via {}: configuration", a.name, l.listen);
                    }
                }
            }
            transport.shutdown().await;
        }
    }
    Ok(())
}

/// A failed `--check` step: the account, the stage and the fix.
fn step_failed(account: &str, l: &ListenerConfig, e: postern_tokio::Error) -> Failure {
    let stage = e.stage().name();
    let fix = e
        .diagnosis()
        .map(|d| format!(" ({}: {})", d.step, d.fix))
        .unwrap_or_default();
    let mut f = Failure::from(e);
    f.message = format!(
        "account {account} via {}: {stage} failed: {}{fix}",
        l.listen, f.message
    );
    f
}

/// A rustls acceptor for local TLS.
struct Acceptor(tokio_rustls::TlsAcceptor);

impl Acceptor {
    fn load(cert: &Path, key: &Path) -> Result<Acceptor, Failure> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| usage(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(usage(format!("{}: no certificate", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| usage(format!("{}: {e}", key.display())))?;
        let config = postern_tokio::rustls::ServerConfig::builder_with_provider(Arc::new(
            postern_transport::crypto_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| usage(format!("local certificate: {e}")))?;
        Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

impl LocalTls<Compat<TcpStream>> for Acceptor {
    type Stream = Compat<tokio_rustls::server::TlsStream<TcpStream>>;
    async fn accept(&self, plain: Compat<TcpStream>) -> std::io::Result<Self::Stream> {
        Ok(self.0.accept(plain.into_inner()).await?.compat())
    }
}
