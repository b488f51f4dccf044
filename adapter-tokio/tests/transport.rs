//! The shared transport scenarios on tokio, against the loopback peers and
//! Postfix's smtp-sink.

postern_test_support::transport_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    postern_tokio::Tokio
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_from_a_tokio_reader() {
    let server = postern_test_support::SmtpServer::start(Default::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("postern-tokio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("message.eml");
    std::fs::write(&path, "Subject: from a file\n\nline one\n.dot line\n").unwrap();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let t = postern_tokio::Transport::builder("127.0.0.1")
        .port(server.port())
        .security(postern_tokio::Security::Plaintext)
        .build()
        .unwrap();
    let envelope = postern_tokio::Envelope::new(
        postern_tokio::Mailbox::parse("a@example.com").unwrap(),
        [postern_tokio::Mailbox::parse("b@example.com").unwrap()],
    );
    t.send(&envelope, postern_tokio::message_from_reader(file))
        .await
        .unwrap();
    assert_eq!(
        server.messages()[0].data.as_deref(),
        Some(&b"Subject: from a file\r\n\r\nline one\r\n.dot line\r\n"[..])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
