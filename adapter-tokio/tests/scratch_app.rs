//! A scratch application outside the workspace: `tests/data/scratch-app.rs`
//! built with one postern dependency line (a path dependency on this crate,
//! as a registry line would be), then run against the loopback peers. It
//! proves the public surface is enough, from one import path, for: a
//! multipart message with display names, Microsoft app-only with a
//! certificate, DKIM, and 500 concurrent sends.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use postern_test_support::{
    Pki, ServerTls, SmtpServer, SmtpServerConfig, TokenServer, TokenServerConfig, Tokens,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Writes the project; its profile matches the workspace's so the shared
/// target directory reuses compiled dependencies.
fn write_project(dir: &Path) {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "scratch-app"
version = "0.0.0"
edition = "2024"
rust-version = "1.95"
publish = false

[dependencies]
postern-tokio = {{ path = "{crate_dir}", features = ["dkim"] }}
tokio = {{ version = "1", features = ["rt-multi-thread", "macros"] }}

[profile.dev.package."*"]
opt-level = 2

[workspace]
"#
        ),
    )
    .unwrap();
    std::fs::copy(
        Path::new(crate_dir).join("tests/data/scratch-app.rs"),
        dir.join("src/main.rs"),
    )
    .unwrap();
    // The workspace's versions, so the build is offline and reproducible.
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[test]
fn a_scratch_application_does_the_four_tasks() {
    let dir = std::env::temp_dir().join(format!("postern-scratch-{}", std::process::id()));
    write_project(&dir);
    // The workspace's own target directory: the dependencies are compiled
    // already (about 40 s of building instead of 5 min).
    let target = workspace().join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = Command::new(&cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the scratch application does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        assertion_clients: vec!["scratch-app".into()],
        tokens: tokens.clone(),
        ..Default::default()
    })
    .unwrap();
    let server = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        tokens,
        require_auth: true,
        ..Default::default()
    })
    .unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let cert_key = workspace().join("oauth-proto/tests/data/test-only-rsa-key.pem");
    let dkim_key =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-only-dkim-ed25519.pem");

    let run = Command::new(target.join("debug").join("scratch-app"))
        .arg(server.port().to_string())
        .arg(token_server.url())
        .arg(&ca)
        .arg(&cert_key)
        .arg(&dkim_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let messages = server.messages();
    assert_eq!(messages.len(), 501);
    let first = String::from_utf8(messages[0].data.clone().unwrap()).unwrap();
    assert!(
        first.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{first}"
    );
    assert!(
        first.contains(" s=scratch;") && first.contains(" d=contoso.com;"),
        "{first}"
    );
    assert!(
        first.contains("From: \"Reports\" <reports@contoso.com>"),
        "{first}"
    );
    assert!(
        first.contains("To: \"Doe, Jane\" <jane@example.org>"),
        "{first}"
    );
    assert!(first.contains("multipart/alternative"), "{first}");
    assert!(first.contains("filename=\"q3.csv\""), "{first}");
    assert!(
        messages
            .iter()
            .all(|m| m.data.as_ref().unwrap().starts_with(b"DKIM-Signature:"))
    );
    assert_eq!(token_server.requests(), 1, "one token for 501 sends");
    assert!(stdout.contains("token_fetches=1"), "{stdout}");
    assert!(
        server.connections() <= 8,
        "{} connections",
        server.connections()
    );
    assert!(
        server
            .auths()
            .iter()
            .all(|a| a.user == "reports@contoso.com")
    );
    std::fs::remove_dir_all(&dir).ok();
}
