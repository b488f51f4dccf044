//! The design's layering rule, enforced: protocol judgments live in the
//! sans-IO cores. Outside `postern-smtp` no code matches on SMTP errors,
//! phases, command refusals or reply codes; outside `postern-oauth` none
//! matches on OAuth error codes or token claims. The transport, the adapters
//! and the command line only map what the cores decide.

use std::path::{Path, PathBuf};

/// What a protocol judgment looks like in source, with why it is banned.
const BANNED: &[(&str, &str)] = &[
    ("Phase::", "an SMTP phase"),
    ("smtp::Error::", "an SMTP connection error"),
    ("CommandError::", "an SMTP command refusal"),
    ("AuthFailureKind::", "an AUTH classification"),
    (".code() ==", "a reply code"),
    (".code() !=", "a reply code"),
    (".code() >", "a reply code"),
    (".code() <", "a reply code"),
    ("match reply.code()", "a reply code"),
    (".enhanced()", "an enhanced status code"),
    ("error_codes", "Microsoft's AADSTS codes"),
    (".error.as_str()", "an OAuth error code"),
    ("\"invalid_grant\"", "an OAuth error code"),
    ("\"invalid_client\"", "an OAuth error code"),
    ("\"roles\"", "a token claim"),
    ("\"scp\"", "a token claim"),
    ("\"aud\"", "a token claim"),
];

/// Where a use is allowed although it matches: printing, not judging.
const ALLOWED: &[(&str, &str)] = &[
    // JSON output shows the enhanced code as text.
    (
        "cli/src/send.rs",
        "\"enhanced\": r.enhanced().map(|e| e.to_string())",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every banned pattern in code (not comments) under `dirs`.
fn violations(root: &Path, dirs: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for d in dirs {
        sources(&root.join(d), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (pattern, what) in BANNED {
                let allowed = ALLOWED
                    .iter()
                    .any(|(f, text)| rel == *f && code.contains(text));
                if code.contains(pattern) && !allowed {
                    found.push(format!(
                        "{rel}:{}: {what} judged outside its core: {code}",
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn no_protocol_judgment_outside_the_cores() {
    let root = workspace();
    assert!(
        root.join("transport/src/lib.rs").exists(),
        "workspace not found from {}",
        root.display()
    );
    let found = violations(
        &root,
        &[
            "transport/src",
            "adapter-tokio/src",
            "adapter-async-std/src",
            "cli/src",
        ],
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_judgment() {
    // The scanner itself must see a match written the old way.
    let dir = std::env::temp_dir().join(format!("postern-layering-{}", std::process::id()));
    let src = dir.join("x/src");
    std::fs::create_dir_all(&src).unwrap_or_default();
    std::fs::write(
        src.join("lib.rs"),
        "// Phase:: in a comment is fine\nfn f(e: &E) -> bool { matches!(e, smtp::Error::Timeout { phase: Phase::Mail }) }\n",
    )
    .unwrap_or_default();
    let found = violations(&dir, &["x/src"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 2, "{found:?}");
}
