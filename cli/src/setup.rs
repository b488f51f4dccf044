//! Settings turned into a transport, TLS options and OAuth2 configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_oauth::{MicrosoftCloud, Provider};
use postern_tokio::{
    Auth, ClientCredential, ClientName, Endpoint, MailboxLimits, Mechanism, OAuth2, Rate, Secret,
    Sharing, StoreKey, Timeouts, TlsOptions, TokenGrant, Transport, TransportBuilder, open_store,
};

use crate::config::{AuthMode, ProviderKind, Settings, secret};
use crate::fail::{Failure, usage};

/// Random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], Failure> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| usage(format!("no randomness available: {e}")))?;
    Ok(b)
}

pub(crate) fn tls_options(s: &Settings) -> Result<TlsOptions, Failure> {
    let mut tls = TlsOptions::default();
    if let Some(ca) = &s.ca_file {
        tls.add_root_pem_file(ca)?;
    }
    if s.dangerous_accept_invalid_certs {
        eprintln!("warning: certificate verification is OFF (--dangerous-accept-invalid-certs)");
        tls = tls.dangerous_accept_invalid_certs(true);
    }
    Ok(tls)
}

/// The one place a provider is built from settings. The Microsoft tenant is
/// required for app-only tokens (the token must come from the app's own
/// tenant) and defaults to `organizations` for a user's delegated sign-in.
pub(crate) fn provider(s: &Settings, delegated: bool) -> Result<(ProviderKind, Provider), Failure> {
    let kind = s.provider.unwrap_or(if s.token_url.is_some() {
        ProviderKind::Generic
    } else {
        ProviderKind::Microsoft
    });
    let provider = match kind {
        ProviderKind::Microsoft => Provider::Microsoft {
            tenant: match (&s.tenant, delegated) {
                (Some(t), _) => t.clone(),
                (None, true) => "organizations".to_owned(),
                (None, false) => {
                    return Err(usage(
                        "--tenant is required for Microsoft app-only tokens (the tenant id or domain)",
                    ));
                }
            },
            cloud: match &s.cloud {
                Some(c) => MicrosoftCloud::from_name(c).ok_or_else(|| {
                    usage(format!("unknown --cloud {c:?} (global, usgov, china)"))
                })?,
                None => MicrosoftCloud::Global,
            },
        },
        ProviderKind::Google => Provider::Google,
        ProviderKind::Generic => Provider::Generic {
            token_url: s
                .token_url
                .clone()
                .ok_or_else(|| usage("--token-url is required for a generic provider"))?,
            authorize_url: s.authorize_url.clone(),
            device_url: None,
            scope: s.scope.clone(),
        },
    };
    Ok((kind, provider))
}

/// `true` when the settings ask for OAuth2 tokens fetched by postern.
pub(crate) fn wants_oauth(s: &Settings) -> bool {
    s.token_env.is_none()
        && s.token_file.is_none()
        && (s.provider.is_some() || s.client_id.is_some() || s.token_url.is_some())
}

/// The OAuth2 configuration, when the settings describe one.
pub(crate) fn oauth(s: &Settings) -> Result<Option<OAuth2>, Failure> {
    if !wants_oauth(s) {
        return Ok(None);
    }
    let delegated = s.refresh_token_file.is_some();
    let (kind, provider) = provider(s, delegated)?;
    let endpoint = match &s.token_url {
        Some(url) => Endpoint::parse_with(url, s.allow_http_token_url),
        None => provider.token_endpoint(false),
    }
    .map_err(|e| usage(format!("token URL: {e}")))?;
    let client_id = s
        .client_id
        .clone()
        .ok_or_else(|| usage("--client-id is required for OAuth2"))?;
    // The mailbox goes in the SASL message, not in the token request: a
    // token check needs none, a send checks it below.
    let user = s
        .user
        .clone()
        .or_else(|| s.from.clone())
        .unwrap_or_default();
    let refresh = match &s.refresh_token_file {
        Some(path) => Some(
            secret("refresh token", None, Some(path), false)?
                .ok_or_else(|| usage("refresh token file is empty"))?,
        ),
        None => None,
    };
    let client = client_credential(s, &client_id)?;
    if kind == ProviderKind::Google && !delegated {
        return Err(usage(
            "Google needs a user's consent: run `postern authorize --provider google` and pass --refresh-token-file",
        ));
    }
    let grant = match refresh {
        Some(r) => TokenGrant::RefreshToken(Secret::new(r)),
        None => TokenGrant::ClientCredentials,
    };
    let mut o = OAuth2::new(user, endpoint, Some(client_id), client, grant);
    if let Some(scope) = s
        .scope
        .clone()
        .or_else(|| provider.default_scope(!delegated))
    {
        o = o.scope(scope);
    }
    if let Some(path) = s.refresh_token_file.clone() {
        o = o.on_refresh_token_rotated(move |new| {
            if let Err(e) = store_secret(&path, new.expose()) {
                eprintln!("warning: could not store the rotated refresh token: {e}");
            }
        });
    }
    Ok(Some(o))
}

fn client_credential(s: &Settings, client_id: &str) -> Result<ClientCredential, Failure> {
    if let Some(key) = &s.certificate_key {
        let thumbprint = s
            .certificate_thumbprint
            .as_deref()
            .ok_or_else(|| usage("--certificate-thumbprint is required with --certificate-key"))?;
        let pem = std::fs::read_to_string(key)
            .map_err(|e| usage(format!("cannot read {}: {e}", key.display())))?;
        return Ok(ClientCredential::certificate(client_id, &pem, thumbprint)?);
    }
    let secret = match &s.client_secret_value {
        Some(v) => Some(v.expose().to_owned()),
        None => secret(
            "client secret",
            s.client_secret_env.as_deref(),
            s.client_secret_file.as_deref(),
            false,
        )?,
    };
    Ok(match secret {
        None => ClientCredential::None,
        Some(v) if s.client_secret_basic => ClientCredential::SecretBasic(Secret::new(v)),
        Some(v) => ClientCredential::SecretPost(Secret::new(v)),
    })
}

/// Writes a secret to `path` with mode 0600, replacing the old file
/// atomically (write a temporary file beside it, then rename).
pub(crate) fn store_secret(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// `true` for `localhost` and loopback IP addresses (127.0.0.0/8, ::1).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The transport for `s`.
/// The DKIM signer of `--dkim-key`: the selector is required, the domain
/// defaults to the domain of `--from` (or `--user`).
pub(crate) fn dkim(s: &Settings, key: &Path) -> Result<postern_tokio::Dkim, Failure> {
    let selector = s
        .dkim_selector
        .as_deref()
        .ok_or_else(|| usage("--dkim-selector is required with --dkim-key"))?;
    let domain = match (&s.dkim_domain, s.from.as_ref().or(s.user.as_ref())) {
        (Some(d), _) => d.clone(),
        (None, Some(from)) => from
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('>').to_owned())
            .ok_or_else(|| usage("--dkim-domain is required: --from has no domain"))?,
        (None, None) => return Err(usage("--dkim-domain or --from is required with --dkim-key")),
    };
    postern_tokio::Dkim::from_pem_file(domain, selector, key)
        .map_err(|e| usage(format!("--dkim-key: {e}")))
}

pub(crate) fn transport(s: &Settings) -> Result<Transport, Failure> {
    transport_with(s, None)
}

/// The transport for `s`; with `fetched`, that access token is used as is
/// instead of redeeming the settings' credentials again (`diagnose` redeems
/// a refresh token once per run).
pub(crate) fn transport_with(s: &Settings, fetched: Option<Secret>) -> Result<Transport, Failure> {
    Ok(builder_with(s, fetched)?.build()?)
}

/// The transport builder for `s` (see [`transport_with`]), for callers that
/// set more (the proxy sets the pool).
pub(crate) fn builder_with(
    s: &Settings,
    fetched: Option<Secret>,
) -> Result<TransportBuilder, Failure> {
    let host = s.host.clone().ok_or_else(|| usage("--host is required"))?;
    let host_name = host.clone();
    let security = s.tls.unwrap_or_default();
    let mut b: TransportBuilder = Transport::builder(host)
        .security(security)
        .tls(tls_options(s)?);
    if let Some(p) = s.port {
        b = b.port(p);
    }
    if let Some(name) = &s.ehlo_name {
        b = b.ehlo_name(ClientName::parse(name).map_err(|e| usage(format!("--ehlo-name: {e}")))?);
    }
    let mut timeouts = match s.timeout {
        Some(t) => Timeouts::uniform(Duration::from_secs(t)),
        None => Timeouts::default(),
    };
    if let Some(t) = s.auth_timeout {
        timeouts.auth = Duration::from_secs(t);
    }
    if let Some(t) = s.data_timeout {
        timeouts.data_end = Duration::from_secs(t);
    }
    b = b.timeouts(timeouts);
    if let Some(t) = s.connect_timeout.or(s.timeout) {
        b = b.connect_timeout(Duration::from_secs(t));
    }
    let mode = s.auth.unwrap_or(AuthMode::Auto);
    let mechanism = match mode {
        AuthMode::Plain => Some(Mechanism::Plain),
        AuthMode::Login => Some(Mechanism::Login),
        AuthMode::Xoauth2 => Some(Mechanism::XOAuth2),
        AuthMode::Oauthbearer => Some(Mechanism::OAuthBearer),
        AuthMode::None | AuthMode::Auto => None,
    };
    if let Some(m) = mechanism {
        b = b.mechanism(m);
    }
    if s.dangerous_allow_credentials_without_tls {
        if !is_loopback(&host_name) {
            return Err(usage(format!(
                "--dangerous-allow-credentials-without-tls is accepted only for a loopback address, not {host_name:?}"
            )));
        }
        eprintln!(
            "warning: credentials may be sent without TLS (--dangerous-allow-credentials-without-tls)"
        );
        b = b.dangerous_allow_credentials_without_tls(true);
    }
    if let Some(key) = &s.dkim_key {
        b = b.dkim(dkim(s, key)?);
    }
    if let Some(sharing) = sharing(s)? {
        b = b.share(sharing);
    }
    if mode == AuthMode::None {
        return Ok(b);
    }
    let user = || {
        s.user
            .clone()
            .or_else(|| s.from.clone())
            .ok_or_else(|| usage("--user is required for AUTH"))
    };
    let token = secret(
        "access token",
        s.token_env.as_deref(),
        s.token_file.as_deref(),
        false,
    )?;
    let password = secret(
        "password",
        s.password_env.as_deref(),
        s.password_file.as_deref(),
        s.password_prompt,
    )?;
    if let Some(key) = &s.service_account_key {
        let json = std::fs::read_to_string(key)
            .map_err(|e| usage(format!("cannot read {}: {e}", key.display())))?;
        b = b.oauth2(OAuth2::google_service_account(&json, &user()?)?);
    } else if let Some(token) = token {
        b = b.bearer_token(user()?, token);
    } else if let Some(token) = fetched {
        b = b.auth(Auth::BearerToken {
            user: user()?,
            token,
        });
    } else if let Some(o) = oauth(s)? {
        if o.user().is_empty() {
            return Err(usage("--user (the mailbox) is required for OAuth2"));
        }
        b = b.oauth2(o);
    } else if let Some(password) = password {
        b = b.password(user()?, password);
    } else if mechanism.is_some() {
        return Err(usage(
            "no credentials: give --password-env/--password-file/--password-prompt, --token-env/--token-file, or OAuth2 settings",
        ));
    }
    Ok(b)
}

/// The shared store and the mailbox's limits, when any is set. Limits
/// without a store are counted in this process.
pub(crate) fn sharing(s: &Settings) -> Result<Option<Sharing>, Failure> {
    let mut limits = match s.limits.as_deref() {
        Some(name) => MailboxLimits::preset(name).ok_or_else(|| {
            usage(format!(
                "--limits {:?}: use microsoft365, google or none",
                postern_tokio::oauth::sanitize(name, 40)
            ))
        })?,
        None => MailboxLimits::none(),
    };
    if let Some(n) = s.max_mailbox_connections {
        limits = limits.connections((n > 0).then_some(n));
    }
    if let Some(n) = s.messages_per_minute {
        limits = limits.messages((n > 0).then(|| Rate::per_minute(n)));
    }
    if let Some(n) = s.recipients_per_day {
        limits = limits.recipients((n > 0).then(|| Rate::per_day(n)));
    }
    let store = match (&s.token_store, limits.is_off()) {
        (None, true) => return Ok(None),
        (None, false) => "memory",
        (Some(url), _) => url.as_str(),
    };
    let store = open_store(store).map_err(|e| usage(format!("--token-store: {e}")))?;
    let mut sharing = Sharing::new(store).limits(limits);
    let var = s.store_key_env.as_deref().unwrap_or("POSTERN_STORE_KEY");
    match std::env::var(var) {
        Ok(text) => {
            let key = StoreKey::from_base64(&text).map_err(|e| usage(format!("{var}: {e}")))?;
            sharing = sharing.store_key(key);
        }
        Err(_) if s.store_key_env.is_some() => {
            return Err(usage(format!(
                "--store-key-env {var}: the variable is not set"
            )));
        }
        Err(_) => {}
    }
    Ok(Some(sharing))
}
