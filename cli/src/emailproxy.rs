//! Import of an email-oauth2-proxy configuration (`emailproxy.config`, an
//! INI file) into `postern proxy`'s own: SMTP servers become listeners,
//! account sections become accounts. Every key is reported as taken,
//! fixed (with what was wrong and what is used instead), ignored (with
//! why), or wrong (the proxy does not start until it is corrected).
//!
//! The INI reader is written here rather than taken from a crate: the
//! report needs each value's line number and its text as written (quotes,
//! spaces, a markdown link pasted from a web page), which INI crates trim
//! or drop. It follows Python's configparser, which email-oauth2-proxy
//! uses: `[section]`, `key = value` or `key: value`, `#` and `;` comment
//! lines, indented continuation lines, keys case-insensitive.

use std::fmt;

use crate::config::Settings;

/// One finding of the import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Note {
    Taken(String),
    Fixed(String),
    Ignored(String),
    Wrong(String),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Section names, keys and values come from the file: shown
        // through the sanitizer, whatever they hold.
        let (label, text) = match self {
            Note::Taken(t) => ("taken:  ", t),
            Note::Fixed(t) => ("fixed:  ", t),
            Note::Ignored(t) => ("ignored:", t),
            Note::Wrong(t) => ("WRONG:  ", t),
        };
        write!(f, "{label} {}", postern_tokio::oauth::sanitize(text, 1000))
    }
}

/// A listener read from an `[SMTP-port]` section.
#[derive(Debug)]
pub(crate) struct ImportedListener {
    pub(crate) listen: String,
    pub(crate) local_tls: &'static str,
    pub(crate) certificate: Option<String>,
    pub(crate) private_key: Option<String>,
    pub(crate) upstream: Settings,
}

/// An account read from an account section.
#[derive(Debug)]
pub(crate) struct ImportedAccount {
    pub(crate) name: String,
    pub(crate) password_hash: String,
    pub(crate) aliases: Vec<String>,
    pub(crate) upstream: Settings,
}

/// The import: what was read and the report.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    pub(crate) listeners: Vec<ImportedListener>,
    pub(crate) accounts: Vec<ImportedAccount>,
    pub(crate) notes: Vec<Note>,
}

impl Imported {
    /// `true` when something must be corrected before the proxy can start.
    pub(crate) fn has_wrong(&self) -> bool {
        self.notes.iter().any(|n| matches!(n, Note::Wrong(_)))
    }
}

struct Entry {
    key: String,
    value: String,
    line: usize,
}

struct Section {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

/// Reads INI text. Lines that are neither a section, an entry, a comment
/// nor a continuation are reported as wrong, never guessed at.
fn parse(text: &str, notes: &mut Vec<Note>) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t'])
            && let Some(entry) = sections.last_mut().and_then(|s| s.entries.last_mut())
        {
            entry.value.push('\n');
            entry.value.push_str(trimmed);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            sections.push(Section {
                name: name.trim().to_owned(),
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let split = trimmed.find(['=', ':']);
        match (split, sections.last_mut()) {
            (Some(at), Some(section)) => section.entries.push(Entry {
                key: trimmed[..at].trim().to_ascii_lowercase(),
                value: trimmed[at + 1..].trim().to_owned(),
                line,
            }),
            (Some(_), None) => notes.push(Note::Wrong(format!(
                "line {line}: an entry before any [section]"
            ))),
            (None, _) => notes.push(Note::Wrong(format!(
                "line {line}: neither a [section] nor `key = value`: {}",
                printable(trimmed)
            ))),
        }
    }
    sections
}

fn printable(text: &str) -> String {
    postern_tokio::oauth::sanitize(text, 200)
}

/// configparser's booleans.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A URL as an admin pasted it: quotes and spaces removed, a markdown link
/// `[text](target)` reduced to its text. Returns the URL and, when it had
/// to be cleaned, what was done.
fn clean_url(value: &str) -> (String, Option<String>) {
    let unquoted = value.trim().trim_matches(['"', '\'']).trim();
    let mut fixes = Vec::new();
    if unquoted != value {
        fixes.push("quotes or spaces around it removed");
    }
    if let Some(rest) = unquoted.strip_prefix('[')
        && let Some((text, _target)) = rest.split_once("](")
    {
        fixes.push("it was a markdown link `[text](target)`: its text is the URL, the target had junk appended");
        return (text.trim().to_owned(), Some(fixes.join("; ")));
    }
    (
        unquoted.to_owned(),
        (!fixes.is_empty()).then(|| fixes.join("; ")),
    )
}

/// Placeholders left from a guide or a sample.
fn placeholder(value: &str) -> Option<&'static str> {
    let upper = value.to_ascii_uppercase();
    if upper.contains("TENANT_ID") || upper.contains("YOUR_TENANT") {
        Some("TENANT_ID")
    } else if value.contains("***")
        || upper.contains("YOUR CLIENT")
        || upper == "CLIENT_ID"
        || upper == "CLIENT_SECRET"
    {
        Some("a sample value")
    } else {
        None
    }
}

/// Reads an email-oauth2-proxy configuration.
pub(crate) fn import(text: &str) -> Imported {
    let mut out = Imported::default();
    let notes = &mut out.notes;
    let sections = parse(text, notes);
    let catch_all_allowed = sections
        .iter()
        .filter(|s| s.name == "emailproxy")
        .flat_map(|s| &s.entries)
        .find(|e| e.key == "allow_catch_all_accounts")
        .and_then(|e| boolean(&e.value))
        .unwrap_or(false);
    for s in &sections {
        let name = s.name.as_str();
        let kind = name
            .split_once('-')
            .filter(|(_, port)| port.parse::<u16>().is_ok());
        match kind {
            Some(("SMTP", port)) => listener(s, port, &mut out.listeners, notes),
            Some(("IMAP" | "POP", _)) => notes.push(Note::Ignored(format!(
                "[{name}] (line {}): postern proxy relays SMTP only; IMAP and POP are not supported",
                s.line
            ))),
            _ if name == "emailproxy" => {
                for e in &s.entries {
                    notes.push(match e.key.as_str() {
                        "allow_catch_all_accounts" => Note::Taken(format!(
                            "[emailproxy] allow_catch_all_accounts = {} (line {})",
                            catch_all_allowed, e.line
                        )),
                        "delete_account_token_on_password_error" => Note::Ignored(format!(
                            "[emailproxy] {} (line {}): a wrong local password gets 535 and never touches upstream tokens",
                            e.key, e.line
                        )),
                        "encrypt_client_secret_on_first_use" => Note::Ignored(format!(
                            "[emailproxy] {} (line {}): local passwords are Argon2 hashes; the client secret stays where it is (keep this file readable by the service only)",
                            e.key, e.line
                        )),
                        other => Note::Ignored(format!("[emailproxy] {other} (line {}): not used by postern", e.line)),
                    });
                }
            }
            _ if name.contains('@') => {
                if name.starts_with('@') && !catch_all_allowed {
                    notes.push(Note::Ignored(format!(
                        "[{name}] (line {}): a catch-all account, and allow_catch_all_accounts is not True",
                        s.line
                    )));
                    continue;
                }
                account(s, &mut out.accounts, notes);
            }
            _ => notes.push(Note::Ignored(format!(
                "[{}] (line {}): not a server or an account section",
                printable(name),
                s.line
            ))),
        }
    }
    if out.listeners.is_empty() {
        out.notes.push(Note::Wrong(
            "no [SMTP-port] section: nothing to listen on".into(),
        ));
    }
    if out.accounts.is_empty() {
        out.notes.push(Note::Wrong(
            "no account section ([user@example.com], [@domain] or [@])".into(),
        ));
    }
    out
}

fn listener(s: &Section, port: &str, out: &mut Vec<ImportedListener>, notes: &mut Vec<Note>) {
    let name = &s.name;
    let mut upstream = Settings::default();
    let mut local = "127.0.0.1".to_owned();
    let (mut certificate, mut private_key) = (None, None);
    let mut starttls = false;
    for e in &s.entries {
        let at = format!("[{name}] {} (line {})", e.key, e.line);
        match e.key.as_str() {
            "server_address" => {
                upstream.host = Some(e.value.clone());
                notes.push(Note::Taken(format!(
                    "{at}: upstream host {}",
                    printable(&e.value)
                )));
            }
            "server_port" => match e.value.parse::<u16>() {
                Ok(p) => {
                    upstream.port = Some(p);
                    notes.push(Note::Taken(format!("{at}: upstream port {p}")));
                }
                Err(_) => notes.push(Note::Wrong(format!(
                    "{at}: not a port: {}",
                    printable(&e.value)
                ))),
            },
            "starttls" | "server_starttls" => match boolean(&e.value) {
                Some(b) => {
                    starttls = b;
                    notes.push(Note::Taken(format!("{at}: STARTTLS upstream = {b}")));
                }
                None => notes.push(Note::Wrong(format!(
                    "{at}: not a boolean: {}",
                    printable(&e.value)
                ))),
            },
            "local_address" => {
                let v = e.value.trim();
                if v.eq_ignore_ascii_case("localhost") {
                    local = "127.0.0.1".into();
                    notes.push(Note::Taken(format!("{at}: listen on 127.0.0.1")));
                } else if v.parse::<std::net::IpAddr>().is_ok() {
                    local = v.to_owned();
                    notes.push(Note::Taken(format!("{at}: listen on {v}")));
                } else {
                    notes.push(Note::Wrong(format!(
                        "{at}: give an IP address, not {}",
                        printable(v)
                    )));
                }
            }
            "local_certificate_path" => {
                certificate = Some(e.value.clone());
                notes.push(Note::Taken(format!("{at}: local TLS certificate")));
            }
            "postern_ca_file" => {
                upstream.ca_file = Some(e.value.trim().into());
                notes.push(Note::Taken(format!(
                    "{at}: extra trusted root certificates for upstream"
                )));
            }
            "local_key_path" => {
                private_key = Some(e.value.clone());
                notes.push(Note::Taken(format!("{at}: local TLS key")));
            }
            "documentation" => {}
            other => notes.push(Note::Ignored(format!(
                "[{name}] {other} (line {}): not used by postern",
                e.line
            ))),
        }
    }
    if upstream.host.is_none() {
        notes.push(Note::Wrong(format!(
            "[{name}] (line {}): no server_address",
            s.line
        )));
        return;
    }
    // email-oauth2-proxy connects with implicit TLS unless told STARTTLS.
    upstream.tls = Some(if starttls {
        postern_tokio::Security::StartTls
    } else {
        postern_tokio::Security::ImplicitTls
    });
    let local_tls = if certificate.is_some() || private_key.is_some() {
        "implicit"
    } else {
        "none"
    };
    let listen = if local.contains(':') {
        format!("[{local}]:{port}")
    } else {
        format!("{local}:{port}")
    };
    out.push(ImportedListener {
        listen,
        local_tls,
        certificate,
        private_key,
        upstream,
    });
}

fn account(s: &Section, out: &mut Vec<ImportedAccount>, notes: &mut Vec<Note>) {
    let name = &s.name;
    let mut upstream = Settings::default();
    let mut hash = None;
    let mut aliases = Vec::new();
    let mut flow = "authorization_code".to_owned();
    let mut scope = None;
    let mut microsoft = false;
    for e in &s.entries {
        let at = format!("[{name}] {} (line {})", e.key, e.line);
        if let Some(what) = placeholder(&e.value)
            && matches!(e.key.as_str(), "token_url" | "client_id" | "client_secret")
        {
            notes.push(Note::Wrong(format!(
                "{at}: still holds {what}; put the real value"
            )));
            continue;
        }
        match e.key.as_str() {
            "token_url" => {
                let (url, fix) = clean_url(&e.value);
                microsoft = url.contains("login.microsoftonline.") || url.contains("login.partner.microsoftonline.") || url.contains("login.microsoftonline.us");
                match fix {
                    Some(f) => notes.push(Note::Fixed(format!("{at}: {f}; using {}", printable(&url)))),
                    None => notes.push(Note::Taken(format!("{at}: {}", printable(&url)))),
                }
                upstream.allow_http_token_url = url.starts_with("http://");
                upstream.provider = Some(crate::config::ProviderKind::Generic);
                upstream.token_url = Some(url);
            }
            "oauth2_scope" => {
                let (text, fix) = clean_url(&e.value);
                if let Some(f) = fix {
                    notes.push(Note::Fixed(format!("{at}: {f}")));
                }
                scope = Some((text, at));
            }
            "oauth2_flow" => {
                flow = e.value.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
                notes.push(Note::Taken(format!("{at}: {flow}")));
            }
            "client_id" => {
                upstream.client_id = Some(e.value.trim().trim_matches(['"', '\'']).to_owned());
                notes.push(Note::Taken(at.clone()));
            }
            "client_secret" => {
                upstream.client_secret_value =
                    Some(postern_tokio::Secret::new(e.value.trim().trim_matches(['"', '\''])));
                notes.push(Note::Taken(format!("{at}: kept in memory only, never logged")));
            }
            "client_secret_encrypted" => notes.push(Note::Wrong(format!(
                "{at}: encrypted with a local password postern cannot know; put the plain client_secret back (and keep the file readable by the service only)"
            ))),
            "postern_password_hash" => match postern_proxy::check_hash(e.value.trim()) {
                Ok(()) => {
                    hash = Some(e.value.trim().to_owned());
                    notes.push(Note::Taken(format!("{at}: local password hash")));
                }
                Err(err) => notes.push(Note::Wrong(format!("{at}: {err}"))),
            },
            "postern_aliases" => {
                aliases = e.value.split([',', ' ', '\n']).filter(|a| !a.is_empty()).map(str::to_owned).collect();
                notes.push(Note::Taken(format!("{at}: {} alias(es)", aliases.len())));
            }
            "postern_refresh_token_file" => {
                upstream.refresh_token_file = Some(e.value.trim().into());
                notes.push(Note::Taken(at.clone()));
            }
            "permission_url" | "redirect_uri" | "redirect_listen_address" | "redirect_list_address" => {
                notes.push(Note::Ignored(format!(
                    "{at}: browser sign-in settings; `postern authorize` takes them when a user must sign in"
                )));
            }
            "documentation" => {}
            other if other.starts_with("access_token") || other.starts_with("refresh_token") || other == "token_salt" || other == "token_iterations" => {
                notes.push(Note::Ignored(format!(
                    "{at}: email-oauth2-proxy's encrypted token cache; postern fetches its own tokens"
                )));
            }
            other => notes.push(Note::Ignored(format!("[{name}] {other} (line {}): not used by postern", e.line))),
        }
    }
    if upstream.token_url.is_none() {
        notes.push(Note::Wrong(format!(
            "[{name}] (line {}): no token_url",
            s.line
        )));
    }
    match flow.as_str() {
        "client_credentials" => {}
        "authorization_code" | "device" if upstream.refresh_token_file.is_some() => {}
        "authorization_code" | "device" => notes.push(Note::Wrong(format!(
            "[{name}]: oauth2_flow {flow} needs a user's sign-in: run `postern authorize` once and add `postern_refresh_token_file = PATH` to this section"
        ))),
        other => notes.push(Note::Wrong(format!(
            "[{name}]: oauth2_flow {other} is not imported; write this account in postern's own configuration"
        ))),
    }
    if let Some((text, at)) = scope {
        let mut scopes: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        for s in &mut scopes {
            if s.contains("SMPT.") {
                let fixed = s.replace("SMPT.", "SMTP.");
                notes.push(Note::Fixed(format!("{at}: {s} is a typo of {fixed}")));
                *s = fixed;
            }
        }
        let before = scopes.len();
        scopes.retain(|s| !s.contains("IMAP.") && !s.contains("POP."));
        if scopes.len() < before {
            notes.push(Note::Fixed(format!(
                "{at}: IMAP and POP scopes dropped (SMTP only)"
            )));
        }
        if microsoft && flow == "client_credentials" {
            let app = "https://outlook.office365.com/.default".to_owned();
            if scopes != [app.clone()] {
                notes.push(Note::Fixed(format!(
                    "{at}: client credentials take the app scope {app}, not delegated scopes or offline_access"
                )));
            }
            scopes = vec![app];
        }
        upstream.scope = Some(scopes.join(" "));
    }
    upstream.auth = Some(crate::config::AuthMode::Xoauth2);
    let Some(password_hash) = hash else {
        notes.push(Note::Wrong(format!(
            "[{name}] (line {}): no local password; email-oauth2-proxy has none, postern requires one: add `postern_password_hash = ...` with the output of `postern proxy hash-password`",
            s.line
        )));
        return;
    };
    out.push(ImportedAccount {
        name: name.clone(),
        password_hash,
        aliases,
        upstream,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin guide's own file (with a hash added): every quirk is
    /// reported, nothing is guessed silently.
    const GUIDE: &str = "[emailproxy]
delete_account_token_on_password_error = True
encrypt_client_secret_on_first_use = False
allow_catch_all_accounts = True
[IMAP-2993]
server_address = outlook.office365.com
server_port = 993
[SMTP-2465]
server_address = smtp.office365.com
server_port = 587
starttls = True
[@]
redirect_uri = http://<Your_Vault_Address>/email-oauth2-proxy-authorize/
redirect_list_address = http://127.0.0.1:8801/
token_url = [https://login.microsoftonline.com/TENANT_ID/oauth2/v2.0/token](https://login.microsoftonline.com/TENANT_ID/oauth2/v2.0/token%22%5C)
permission_url = https://login.microsoftonline.com/TENANT_ID/oauth2/v2.0/authorize
oauth2_scope = https://outlook.office365.com/IMAP.AccessAsUser.All https://outlook.office365.com/POP.AccessAsUser.All https://outlook.office365.com/SMPT.Send offline_access
client_id = CLIENT_ID
client_secret = CLIENT_SECRET
oauth2_flow = client_credentials
";

    #[test]
    fn the_guides_file_is_reported_in_full() {
        let imported = import(GUIDE);
        let text: Vec<String> = imported.notes.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("[IMAP-2993] (line 5): postern proxy relays SMTP only"),
            "{text:#?}"
        );
        assert!(has("upstream host smtp.office365.com"));
        assert!(has("STARTTLS upstream = true"));
        assert!(
            has("token_url (line 15): still holds TENANT_ID"),
            "{text:#?}"
        );
        assert!(
            has("client_id (line 18): still holds a sample value"),
            "{text:#?}"
        );
        assert!(has(
            "SMPT.Send is a typo of https://outlook.office365.com/SMTP.Send"
        ));
        assert!(has("IMAP and POP scopes dropped"));
        assert!(has("no local password"));
        assert!(has(
            "redirect_list_address (line 14): browser sign-in settings"
        ));
        assert!(imported.has_wrong());
        assert_eq!(imported.listeners.len(), 1);
        assert_eq!(imported.listeners[0].listen, "127.0.0.1:2465");
        assert!(
            imported.accounts.is_empty(),
            "no account without a local password"
        );
    }

    #[test]
    fn a_corrected_file_imports_with_fixes_only() {
        let hash = postern_proxy::hash_password("local password").expect("hash");
        let corrected = GUIDE
            .replace("TENANT_ID", "contoso.onmicrosoft.com")
            .replace("client_id = CLIENT_ID", "client_id = 0000-app")
            .replace(
                "client_secret = CLIENT_SECRET",
                &format!("client_secret = s3cret\npostern_password_hash = {hash}"),
            );
        let imported = import(&corrected);
        let text: Vec<String> = imported.notes.iter().map(ToString::to_string).collect();
        assert!(!imported.has_wrong(), "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("fixed:") && t.contains("markdown link")),
            "{text:#?}"
        );
        let a = &imported.accounts[0];
        assert_eq!(a.name, "@");
        assert_eq!(
            a.upstream.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(
            a.upstream.scope.as_deref(),
            Some("https://outlook.office365.com/.default")
        );
        assert_eq!(
            a.upstream.client_secret_value.as_ref().map(|s| s.expose()),
            Some("s3cret")
        );
        assert!(
            !format!("{imported:?}").contains("s3cret"),
            "the secret never shows"
        );
    }

    #[test]
    fn malformed_lines_are_reported_not_guessed() {
        let imported =
            import("stray = 1\n[SMTP-1587]\nserver_address smtp.example.com\n[SMTP-x]\n");
        let text: Vec<String> = imported.notes.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("line 1: an entry before any [section]")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("line 3: neither a [section] nor `key = value`")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("[SMTP-x] (line 4): not a server or an account section")),
            "{text:#?}"
        );
        assert!(imported.has_wrong());
    }
}
