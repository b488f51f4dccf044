//! Secrets never reach the logs: run the password and token scenarios with
//! every tracing event recorded, then look for the secrets in the output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use postern_test_support::scenarios;
use postern_tokio::Tokio;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    scenarios::starttls_password::<Tokio>().await;
    scenarios::token_rejected_then_refreshed_once(postern_test_support::Virtual::new(Tokio)).await;
    scenarios::token_endpoint_error::<Tokio>().await;
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The scenarios ran and were logged.
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(logs.contains("access token fetched"), "{logs}");
    assert!(logs.contains("token request failed"), "{logs}");
    // Passwords, client secrets and issued tokens (`at-N-...`) are absent.
    for secret in [
        "s3cret~pw",
        "app~secret",
        "not-the-secret",
        "at-1-",
        "at-2-",
        "at-3-",
    ] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
}
