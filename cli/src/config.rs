//! Settings from flags, environment, a TOML profile, or a nodemailer JSON
//! block, merged in that order of precedence. Secrets are never accepted as
//! values: only as the name of an environment variable, a file, or a prompt.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use postern_tokio::Security;
use serde::{Deserialize, Serialize};

use crate::fail::{Failure, usage};

/// Parses a TLS mode flag or profile value into the one TLS policy type.
fn parse_security(s: &str) -> Result<Security, String> {
    s.parse::<Security>().map_err(|e| e.to_string())
}

/// Writes the TLS policy as its name (for merging settings).
fn ser_security<S: serde::Serializer>(v: &Option<Security>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => s.serialize_some(p.name()),
        None => s.serialize_none(),
    }
}

/// Deserializes a profile's `tls = "..."` into the one TLS policy type.
fn de_security<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Security>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| parse_security(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// The SASL mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum AuthMode {
    /// No AUTH.
    None,
    /// PLAIN with a password.
    Plain,
    /// LOGIN with a password.
    Login,
    /// XOAUTH2 with a token (Microsoft 365, Gmail).
    Xoauth2,
    /// OAUTHBEARER with a token (RFC 7628).
    Oauthbearer,
    /// The best mechanism the server offers for the credentials given.
    Auto,
}

/// Where OAuth2 tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ProviderKind {
    /// Microsoft Entra ID (Exchange Online).
    Microsoft,
    /// Google.
    Google,
    /// Any OAuth2 server (give --token-url).
    Generic,
}

/// Connection, authentication and OAuth2 settings shared by `send`, `token`
/// and `diagnose`. Every flag can also come from the environment variable
/// shown, or from a profile in the config file.
#[derive(Args, Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    /// Config file with [profiles.NAME] tables.
    #[arg(long, env = "POSTERN_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Profile to read from the config file.
    #[arg(long, short = 'P', env = "POSTERN_PROFILE")]
    #[serde(skip)]
    pub(crate) profile: Option<String>,
    /// Read settings from a nodemailer transport block: JSON, or a
    /// `local.js` object literal as a product guide writes it (secrets from
    /// process.env).
    #[arg(long, value_name = "FILE", env = "POSTERN_NODEMAILER")]
    #[serde(skip)]
    pub(crate) nodemailer: Option<PathBuf>,

    /// SMTP server host name [default: the provider's, smtp.office365.com
    /// or smtp.gmail.com].
    #[arg(long, env = "POSTERN_HOST")]
    pub(crate) host: Option<String>,
    /// SMTP port [default: 465 implicit, 587 starttls, 25 none].
    #[arg(long, env = "POSTERN_PORT")]
    pub(crate) port: Option<u16>,
    /// TLS mode: implicit, starttls, starttls-opportunistic or none
    /// [default: starttls].
    #[arg(long, env = "POSTERN_TLS", value_name = "MODE", value_parser = parse_security)]
    #[serde(deserialize_with = "de_security", serialize_with = "ser_security")]
    pub(crate) tls: Option<Security>,
    /// Extra trusted root certificates (PEM), e.g. a company CA.
    #[arg(long, value_name = "PEM", env = "POSTERN_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// DANGEROUS: accept any server certificate (expired, self-signed, for
    /// another host). Anyone on the path can read the credentials.
    #[arg(long, env = "POSTERN_DANGEROUS_ACCEPT_INVALID_CERTS")]
    pub(crate) dangerous_accept_invalid_certs: bool,
    /// Name sent in EHLO [default: [127.0.0.1]].
    #[arg(long, env = "POSTERN_EHLO_NAME")]
    pub(crate) ehlo_name: Option<String>,

    /// SASL mechanism [default: auto].
    #[arg(long, value_enum, env = "POSTERN_AUTH")]
    pub(crate) auth: Option<AuthMode>,
    /// User name for AUTH (the mailbox for OAuth2).
    #[arg(long, env = "POSTERN_USER")]
    pub(crate) user: Option<String>,
    /// Environment variable holding the password.
    #[arg(long, value_name = "VAR", env = "POSTERN_PASSWORD_ENV")]
    pub(crate) password_env: Option<String>,
    /// File holding the password.
    #[arg(long, value_name = "FILE", env = "POSTERN_PASSWORD_FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// Ask for the password on the terminal.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) password_prompt: bool,
    /// Environment variable holding an access token obtained elsewhere.
    #[arg(long, value_name = "VAR", env = "POSTERN_TOKEN_ENV")]
    pub(crate) token_env: Option<String>,
    /// File holding an access token obtained elsewhere.
    #[arg(long, value_name = "FILE", env = "POSTERN_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// OAuth2 provider.
    #[arg(long, value_enum, env = "POSTERN_PROVIDER")]
    pub(crate) provider: Option<ProviderKind>,
    /// Microsoft tenant id or domain.
    #[arg(long, env = "POSTERN_TENANT")]
    pub(crate) tenant: Option<String>,
    /// Microsoft cloud: global, usgov, china.
    #[arg(long, env = "POSTERN_CLOUD")]
    pub(crate) cloud: Option<String>,
    /// OAuth2 client (application) id.
    #[arg(long, env = "POSTERN_CLIENT_ID")]
    pub(crate) client_id: Option<String>,
    /// Environment variable holding the client secret (its value, not its id).
    #[arg(long, value_name = "VAR", env = "POSTERN_CLIENT_SECRET_ENV")]
    pub(crate) client_secret_env: Option<String>,
    /// File holding the client secret.
    #[arg(long, value_name = "FILE", env = "POSTERN_CLIENT_SECRET_FILE")]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// Send the client secret in HTTP Basic instead of the form body.
    #[arg(long, env = "POSTERN_CLIENT_SECRET_BASIC")]
    pub(crate) client_secret_basic: bool,
    /// Certificate credential: the private key (PKCS #8 PEM, RSA) whose
    /// certificate is uploaded to the app registration.
    #[arg(long, value_name = "PEM", env = "POSTERN_CERTIFICATE_KEY")]
    pub(crate) certificate_key: Option<PathBuf>,
    /// Certificate credential: the certificate's SHA-1 thumbprint (hex, as
    /// Entra shows it).
    #[arg(long, value_name = "HEX", env = "POSTERN_CERTIFICATE_THUMBPRINT")]
    pub(crate) certificate_thumbprint: Option<String>,
    /// Google service account key (the JSON file from the Cloud console),
    /// with domain-wide delegation: tokens for --user without a sign-in.
    #[arg(long, value_name = "JSON", env = "POSTERN_SERVICE_ACCOUNT_KEY")]
    pub(crate) service_account_key: Option<PathBuf>,
    /// Scope [default: the provider's mail scope].
    #[arg(long, env = "POSTERN_SCOPE")]
    pub(crate) scope: Option<String>,
    /// Token endpoint URL (generic provider, or to override).
    #[arg(long, env = "POSTERN_TOKEN_URL")]
    pub(crate) token_url: Option<String>,
    /// Authorization endpoint URL (generic provider).
    #[arg(long, env = "POSTERN_AUTHORIZE_URL")]
    pub(crate) authorize_url: Option<String>,
    /// File holding the refresh token (written by `postern authorize`); its
    /// presence selects the delegated flow.
    #[arg(long, value_name = "FILE", env = "POSTERN_REFRESH_TOKEN_FILE")]
    pub(crate) refresh_token_file: Option<PathBuf>,
    /// Allow an http:// token URL on a loopback address (test servers).
    #[arg(long, env = "POSTERN_ALLOW_HTTP_TOKEN_URL")]
    pub(crate) allow_http_token_url: bool,

    /// Timeout for every phase, seconds [default: RFC 5321's per phase].
    #[arg(long, value_name = "SECS", env = "POSTERN_TIMEOUT")]
    pub(crate) timeout: Option<u64>,
    /// Connect timeout, seconds [default: 30].
    #[arg(long, value_name = "SECS", env = "POSTERN_CONNECT_TIMEOUT")]
    pub(crate) connect_timeout: Option<u64>,
    /// AUTH timeout, seconds.
    #[arg(long, value_name = "SECS", env = "POSTERN_AUTH_TIMEOUT")]
    pub(crate) auth_timeout: Option<u64>,
    /// End-of-data timeout, seconds [default: 600].
    #[arg(long, value_name = "SECS", env = "POSTERN_DATA_TIMEOUT")]
    pub(crate) data_timeout: Option<u64>,

    /// Envelope sender and From address.
    #[arg(long, env = "POSTERN_FROM")]
    pub(crate) from: Option<String>,
    /// Display name for From, in messages postern builds.
    #[arg(long, env = "POSTERN_FROM_NAME")]
    pub(crate) from_name: Option<String>,
    /// Reply-To address, in messages postern builds.
    #[arg(long, env = "POSTERN_REPLY_TO")]
    pub(crate) reply_to: Option<String>,
    /// DKIM: sign every message with this private key (PEM; RSA, or
    /// Ed25519 from `openssl genpkey -algorithm ed25519`).
    #[arg(long, value_name = "PEM", env = "POSTERN_DKIM_KEY")]
    pub(crate) dkim_key: Option<PathBuf>,
    /// DKIM selector (`s=`), required with --dkim-key: the key is published
    /// at SELECTOR._domainkey.DOMAIN.
    #[arg(long, env = "POSTERN_DKIM_SELECTOR")]
    pub(crate) dkim_selector: Option<String>,
    /// DKIM signing domain (`d=`) [default: the domain of --from].
    #[arg(long, env = "POSTERN_DKIM_DOMAIN")]
    pub(crate) dkim_domain: Option<String>,
    /// Share tokens and the mailbox's limits with other postern processes:
    /// `redis://HOST:PORT[/DB]` (many hosts), `file:DIR` (one host), or
    /// `memory` (this process only).
    #[arg(long, value_name = "URL", env = "POSTERN_TOKEN_STORE")]
    pub(crate) token_store: Option<String>,
    /// Environment variable holding the key that encrypts tokens in the
    /// store (32 bytes, base64: `openssl rand -base64 32`) [default:
    /// POSTERN_STORE_KEY, when it is set].
    #[arg(long, value_name = "VAR", env = "POSTERN_STORE_KEY_ENV")]
    pub(crate) store_key_env: Option<String>,
    /// The mailbox's sending limits, counted across every process sharing
    /// the store: microsoft365 (3 connections, 30 messages a minute, 10,000
    /// recipients a day), google (1,800 messages and 9,000 recipients a
    /// day), none.
    #[arg(long, value_name = "PRESET", env = "POSTERN_LIMITS")]
    pub(crate) limits: Option<String>,
    /// Overrides the preset: SMTP connections open at once for the
    /// mailbox (0: no limit).
    #[arg(long, value_name = "N", env = "POSTERN_MAX_MAILBOX_CONNECTIONS")]
    pub(crate) max_mailbox_connections: Option<u32>,
    /// Overrides the preset: messages per minute (0: no limit).
    #[arg(long, value_name = "N", env = "POSTERN_MESSAGES_PER_MINUTE")]
    pub(crate) messages_per_minute: Option<u64>,
    /// Overrides the preset: recipients per day (0: no limit).
    #[arg(long, value_name = "N", env = "POSTERN_RECIPIENTS_PER_DAY")]
    pub(crate) recipients_per_day: Option<u64>,
    /// DANGEROUS: send credentials without TLS. Accepted only for a
    /// loopback address (a local submission proxy).
    #[arg(long, env = "POSTERN_DANGEROUS_ALLOW_CREDENTIALS_WITHOUT_TLS")]
    pub(crate) dangerous_allow_credentials_without_tls: bool,
    /// A client secret read from a file postern imports (an
    /// email-oauth2-proxy configuration keeps it there): never a flag, a
    /// variable or a profile key.
    #[arg(skip)]
    #[serde(skip)]
    pub(crate) client_secret_value: Option<postern_tokio::Secret>,
}

impl Settings {
    /// Fills what flags and environment left unset from `other`: every
    /// setting that is unset here (or a switch that is off) takes `other`'s.
    /// Generic over the fields, so a new setting cannot be missed.
    pub(crate) fn fill_from(&mut self, other: &Settings) -> Result<(), Failure> {
        let bad = |e: serde_json::Error| usage(format!("merging settings: {e}"));
        let mut mine = serde_json::to_value(&*self).map_err(bad)?;
        let theirs = serde_json::to_value(other).map_err(bad)?;
        if let (Some(mine), Some(theirs)) = (mine.as_object_mut(), theirs.as_object()) {
            for (key, value) in theirs {
                let unset = matches!(
                    mine.get(key),
                    None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false))
                );
                if unset {
                    mine.insert(key.clone(), value.clone());
                }
            }
        }
        let mut merged: Settings = serde_json::from_value(mine).map_err(bad)?;
        // Not settings of a profile: kept from the command line.
        merged.config = self.config.take();
        merged.profile = self.profile.take();
        merged.nodemailer = self.nodemailer.take();
        merged.password_prompt = self.password_prompt;
        merged.client_secret_value = self
            .client_secret_value
            .take()
            .or_else(|| other.client_secret_value.clone());
        *self = merged;
        Ok(())
    }

    /// Applies the profile and the nodemailer block, if any.
    pub(crate) fn resolve(mut self) -> Result<Settings, Failure> {
        if let Some(path) = self.nodemailer.clone() {
            let other = nodemailer(&path)?;
            self.fill_from(&other)?;
        }
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => default_config_path().filter(|p| p.exists()),
        };
        if let Some(name) = self.profile.clone() {
            let Some(path) = path else {
                return Err(usage(format!(
                    "profile {name:?} requested but no config file (use --config)"
                )));
            };
            let profile = load_profile(&path, &name)?;
            self.fill_from(&profile)?;
        }
        // Microsoft and Google have one submission server each: with no
        // host given, theirs (and its TLS mode).
        if self.host.is_none() {
            let provider = match self.provider {
                Some(ProviderKind::Microsoft) => Some(postern_oauth::Provider::Microsoft {
                    tenant: String::new(),
                    cloud: self
                        .cloud
                        .as_deref()
                        .and_then(postern_oauth::MicrosoftCloud::from_name)
                        .unwrap_or_default(),
                }),
                Some(ProviderKind::Google) => Some(postern_oauth::Provider::Google),
                _ => None,
            };
            if let Some((host, port, implicit)) = provider
                .as_ref()
                .and_then(postern_oauth::Provider::submission_server)
            {
                self.host = Some(host.to_owned());
                if self.tls.is_none() {
                    let mode = if implicit {
                        Security::ImplicitTls
                    } else {
                        Security::StartTls
                    };
                    self.tls = Some(mode);
                    if self.port.is_none() && mode.default_port() != port {
                        self.port = Some(port);
                    }
                }
            }
        }
        Ok(self)
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("postern").join("config.toml"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, Settings>,
}

fn load_profile(path: &Path, name: &str) -> Result<Settings, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let file: ConfigFile =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let names: Vec<_> = file.profiles.keys().cloned().collect();
    file.profiles.get(name).cloned().ok_or_else(|| {
        usage(format!(
            "no profile {name:?} in {} (it has: {})",
            path.display(),
            names.join(", ")
        ))
    })
}

/// Reads a nodemailer transport block: JSON, or the JavaScript object
/// literal of a `local.js` / `config.js` as a product guide writes it
/// (`mail: { smtp: { type: 'oauth2', host, port, auth: { user }, oauth2: {
/// host, grantType, clientId, clientSecret, scope } } }`, with
/// `process.env.NAME` values and template literals). Values from the
/// environment are read now, for any field; secrets (`pass`, `clientSecret`,
/// `accessToken`) must come from the environment (`process.env.NAME` or
/// `"env:NAME"`) and are only named here. A Microsoft or Google token URL
/// selects that provider (tenant and cloud from the URL), so its checks run.
/// Keys postern does not use are reported.
pub(crate) fn nodemailer(path: &Path) -> Result<Settings, Failure> {
    use postern_config::js;
    use serde_json::Value;
    let where_ = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read {where_}: {e}")))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let root = js::parse(&text, &env).map_err(|e| usage(format!("{where_}: {e}")))?;
    let mut unused: Vec<String> = Vec::new();
    let mut check_keys = |v: &Value, at: &str, known: &[&str]| {
        if let Some(m) = v.as_object() {
            for k in m.keys().filter(|k| !known.contains(&k.as_str())) {
                unused.push(format!("{at}{k}"));
            }
        }
    };
    // The guides nest the transport as `mail.smtp`, with `mail.from`.
    let (mail, mail_at) = match root.get("mail").filter(|m| m.is_object()) {
        Some(m) => {
            check_keys(&root, "", &["mail"]);
            (m, "mail.")
        }
        None => (&root, ""),
    };
    let (smtp, smtp_at) = match mail.get("smtp").filter(|m| m.is_object()) {
        Some(s) => {
            check_keys(mail, mail_at, &["smtp", "from"]);
            (s, format!("{mail_at}smtp."))
        }
        None => (mail, mail_at.to_owned()),
    };
    check_keys(
        smtp,
        &smtp_at,
        &[
            "host",
            "port",
            "secure",
            "requireTLS",
            "ignoreTLS",
            "auth",
            "oauth2",
            "type",
            "name",
            "from",
        ],
    );
    let null = Value::Null;
    let auth = smtp.get("auth").unwrap_or(&null);
    let oauth = smtp.get("oauth2").unwrap_or(auth);
    check_keys(
        auth,
        &format!("{smtp_at}auth."),
        &[
            "user",
            "pass",
            "type",
            "clientId",
            "clientSecret",
            "refreshToken",
            "accessToken",
            "accessUrl",
            "scope",
            "expires",
        ],
    );
    if smtp.get("oauth2").is_some() {
        check_keys(
            oauth,
            &format!("{smtp_at}oauth2."),
            &[
                "host",
                "accessUrl",
                "grantType",
                "clientId",
                "clientSecret",
                "scope",
                "user",
                "accessToken",
                "refreshToken",
            ],
        );
    }
    // A value for a field that is not a secret: the environment is read now.
    let text = |v: &Value, k: &str| -> Result<Option<String>, Failure> {
        let Some(raw) = v.get(k) else { return Ok(None) };
        match js::resolve(raw, &env) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Null) => Ok(None),
            Some(other) => Err(usage(format!("{where_}: {k} must be text, not {other}"))),
            None => Err(usage(format!(
                "{where_}: {k} reads an environment variable that is not set ({})",
                raw.as_str().unwrap_or("")
            ))),
        }
    };
    let flag = |k: &str| -> Result<bool, Failure> {
        match smtp.get(k).and_then(|raw| js::resolve(raw, &env)) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) => Ok(s == "true"),
            Some(other) => Err(usage(format!(
                "{where_}: {k} must be true or false, not {other}"
            ))),
        }
    };
    // A secret: only the name of the variable that holds it.
    let secret_env = |v: &Value, k: &str| -> Result<Option<String>, Failure> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match s.strip_prefix("env:") {
                Some(var) => Ok(Some(var.to_owned())),
                None => Err(usage(format!(
                    "{where_}: {k} holds a literal secret; write process.env.VARIABLE (or \"env:VARIABLE\") and export the secret in that variable"
                ))),
            },
            Some(_) => Err(usage(format!(
                "{where_}: {k} must come from the environment (process.env.VARIABLE)"
            ))),
        }
    };
    let mut out = Settings {
        host: text(smtp, "host")?,
        port: match text(smtp, "port")? {
            Some(p) => Some(
                p.parse()
                    .map_err(|_| usage(format!("{where_}: port {p:?} is not a port number")))?,
            ),
            None => None,
        },
        ehlo_name: text(smtp, "name")?,
        from: match text(mail, "from")? {
            Some(f) => Some(f),
            None => text(smtp, "from")?,
        },
        ..Settings::default()
    };
    out.tls = Some(if flag("secure")? {
        Security::ImplicitTls
    } else if flag("ignoreTLS")? {
        Security::Plaintext
    } else if flag("requireTLS")? {
        Security::StartTls
    } else {
        Security::StartTlsOpportunistic
    });
    out.user = text(auth, "user")?.or(text(oauth, "user")?);
    out.password_env = secret_env(auth, "pass")?;
    // nodemailer puts OAuth2 settings in `auth` (type: "OAuth2"), in a
    // separate `oauth2` block, or names the type on the transport.
    let is_oauth = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("oauth2"))
    };
    if oauth.get("clientId").is_some() || is_oauth(auth) || is_oauth(smtp) {
        out.client_id = text(oauth, "clientId")?;
        out.client_secret_env = secret_env(oauth, "clientSecret")?;
        out.scope = text(oauth, "scope")?;
        let token_url = text(oauth, "host")?.or(text(oauth, "accessUrl")?);
        match token_url.as_deref().map(postern_oauth::Provider::recognize) {
            Some(Some(postern_oauth::Provider::Microsoft { tenant, cloud })) => {
                out.provider = Some(ProviderKind::Microsoft);
                out.tenant = Some(tenant);
                out.cloud = Some(cloud.name().to_owned());
            }
            Some(Some(postern_oauth::Provider::Google)) => {
                out.provider = Some(ProviderKind::Google)
            }
            _ => {
                out.provider = Some(ProviderKind::Generic);
                out.token_url = token_url;
            }
        }
        if let Some(var) = secret_env(oauth, "accessToken")? {
            out.token_env = Some(var);
        }
        if oauth.get("refreshToken").is_some() {
            return Err(usage(format!(
                "{where_}: refreshToken: store it in a file and use --refresh-token-file"
            )));
        }
        out.auth = Some(AuthMode::Xoauth2);
        if let Some(g) = text(oauth, "grantType")?
            && g != "client_credentials"
        {
            return Err(usage(format!(
                "{where_}: grantType {g:?} is not supported here (client_credentials is)"
            )));
        }
    }
    if !unused.is_empty() {
        eprintln!(
            "warning: {where_}: not used by postern: {}",
            unused.join(", ")
        );
    }
    Ok(out)
}

/// Reads a secret from an environment variable, a file, or the terminal.
pub(crate) fn secret(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
    prompt: bool,
) -> Result<Option<String>, Failure> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(usage(format!(
                "{what}: environment variable {var} is not set"
            ))),
        };
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("{what}: cannot read {}: {e}", path.display())))?;
        let text = text.trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            return Err(usage(format!("{what}: {} is empty", path.display())));
        }
        return Ok(Some(text));
    }
    if prompt {
        let v = rpassword::prompt_password(format!("{what}: "))
            .map_err(|e| usage(format!("{what}: cannot read from the terminal: {e}")))?;
        return Ok(Some(v));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: Settings,
    }

    /// Not settings: where settings come from, and the interactive prompt.
    const META: &[&str] = &["config", "profile", "nodemailer", "password_prompt"];

    /// The settings table: flag, environment variable, profile key, meaning.
    fn table() -> Vec<(String, String, String, String)> {
        let keys = serde_json::to_value(Settings::default()).unwrap();
        Wrapper::command()
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .map(|a| {
                let id = a.get_id().as_str().to_owned();
                let env = a
                    .get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let key = if keys.get(&id).is_some() {
                    id.clone()
                } else {
                    String::new()
                };
                let help = a
                    .get_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default()
                    .replace('\n', " ")
                    .replace('|', "\\|");
                (format!("--{}", id.replace('_', "-")), env, key, help)
            })
            .collect()
    }

    #[test]
    fn every_setting_has_a_flag_an_env_var_and_a_profile_key() {
        for (flag, env, key, _) in table() {
            let id = flag.trim_start_matches("--").replace('-', "_");
            assert!(
                !env.is_empty() || id == "password_prompt",
                "{flag} has no environment variable"
            );
            if !META.contains(&id.as_str()) {
                assert_eq!(key, id, "{flag} has no profile key");
                assert_eq!(
                    env,
                    format!("POSTERN_{}", id.to_ascii_uppercase()),
                    "{flag}"
                );
            }
        }
    }

    #[test]
    fn a_profile_fills_every_field_it_sets() {
        // Every profile key set to a value different from the default
        // must arrive: the merge is generic, so a new field cannot be lost.
        let toml = r#"
host = "h"
port = 2525
tls = "implicit"
ehlo_name = "client.example.com"
from_name = "Billing"
reply_to = "help@example.com"
dangerous_accept_invalid_certs = true
dangerous_allow_credentials_without_tls = true
client_secret_basic = true
"#;
        let profile: Settings = toml::from_str(toml).unwrap();
        let mut s = Settings {
            host: Some("from-flag".into()),
            ..Settings::default()
        };
        s.fill_from(&profile).unwrap();
        assert_eq!(s.host.as_deref(), Some("from-flag"), "flags win");
        assert_eq!(s.port, Some(2525));
        assert_eq!(s.tls, Some(Security::ImplicitTls));
        assert_eq!(s.ehlo_name.as_deref(), Some("client.example.com"));
        assert_eq!(s.from_name.as_deref(), Some("Billing"));
        assert_eq!(s.reply_to.as_deref(), Some("help@example.com"));
        assert!(s.dangerous_accept_invalid_certs && s.dangerous_allow_credentials_without_tls);
        assert!(s.client_secret_basic);
    }

    /// README's settings table is this table. `POSTERN_UPDATE_README=1`
    /// rewrites it.
    #[test]
    fn readme_lists_every_setting() {
        let mut md = String::from(
            "| flag | environment | profile key | meaning |\n| --- | --- | --- | --- |\n",
        );
        for (flag, env, key, help) in table() {
            let cell = |s: &str| {
                if s.is_empty() {
                    "".to_owned()
                } else {
                    format!("`{s}`")
                }
            };
            md.push_str(&format!(
                "| `{flag}` | {} | {} | {help} |\n",
                cell(&env),
                cell(&key)
            ));
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        if !std::path::Path::new(workspace).exists() {
            // Built from the published package: the table lives in the
            // repository's README only.
            return;
        }
        let readme = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
        let a = readme.find(begin).expect("README has the settings markers") + begin.len();
        let b = readme.find(end).unwrap();
        if readme[a..b] != md {
            if std::env::var_os("POSTERN_UPDATE_README").is_some() {
                std::fs::write(path, format!("{}{md}{}", &readme[..a], &readme[b..])).unwrap();
            } else {
                panic!("README's settings table is stale; run with POSTERN_UPDATE_README=1:\n{md}");
            }
        }
    }
}
