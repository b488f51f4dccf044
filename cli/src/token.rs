//! `postern token` and the token checks `diagnose` shares.

use clap::Args;
use postern_oauth::preflight::mail_claims;
use postern_tokio::{OAuth2, TokenResponse};
use serde_json::json;

use crate::config::Settings;
use crate::fail::{Failure, usage};
use crate::setup;

/// Arguments of `postern token`.
#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) settings: Settings,
    /// Print the access token itself (it is a password: handle with care).
    #[arg(long)]
    show_token: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Text from the token endpoint (or a claim inside its token), for the
/// terminal.
pub(crate) fn shown(text: &str) -> String {
    postern_tokio::oauth::sanitize(text, postern_tokio::oauth::SHOWN_CHARS)
}

/// Fetches one token.
pub(crate) async fn fetch(s: &Settings, oauth: &OAuth2) -> Result<TokenResponse, Failure> {
    let tls = setup::tls_options(s)?;
    // With a shared store, through it: a direct redemption of a shared
    // refresh token would retire the store's copy.
    match setup::sharing(s)? {
        Some(sharing) => Ok(postern_tokio::fetch_token_shared(oauth, &tls, sharing).await?),
        None => Ok(postern_tokio::fetch_token(oauth, &tls).await?),
    }
}

/// Runs `postern token`.
pub(crate) async fn run(args: TokenArgs) -> Result<(), Failure> {
    let s = args.settings.clone().resolve()?;
    let oauth = setup::oauth(&s)?.ok_or_else(|| {
        usage(
            "no OAuth2 settings: give --provider, --client-id and a client secret or refresh token",
        )
    })?;
    let t = fetch(&s, &oauth).await?;
    let claims = mail_claims(t.access_token.expose());
    if args.json {
        let mut v = json!({
            "token_type": t.token_type,
            "expires_in": t.expires_in.map(|d| d.as_secs()),
            "scope": t.scope,
            "refresh_token_returned": t.refresh_token.is_some(),
            "claims": claims,
        });
        if args.show_token {
            v["access_token"] = json!(t.access_token.expose());
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("token type:  {}", shown(&t.token_type));
    match t.expires_in {
        Some(d) => println!("expires in:  {} s", d.as_secs()),
        None => println!("expires in:  (not stated)"),
    }
    if let Some(scope) = &t.scope {
        println!("scope:       {}", shown(scope));
    }
    match &claims {
        Some(c) => {
            for (k, v) in c {
                println!("{:<12} {}", shown(k), shown(&v.to_string()));
            }
        }
        None => println!("claims:      (opaque token, not a JWT)"),
    }
    if args.show_token {
        println!("access token: {}", t.access_token.expose());
    } else {
        println!(
            "access token: [redacted, {} characters; --show-token prints it]",
            t.access_token.len()
        );
    }
    Ok(())
}
