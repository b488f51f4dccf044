//! The shared transport scenarios on async-std, against the loopback peers and
//! Postfix's smtp-sink.

postern_test_support::transport_tests!(
    #[async_std::test]
    postern_async_std::AsyncStd
);

#[async_std::test]
async fn streamed_from_an_async_std_reader() {
    let server = postern_test_support::SmtpServer::start(Default::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("postern-async-std-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("message.eml");
    std::fs::write(&path, "Subject: from a file\n\nline one\n.dot line\n").unwrap();
    let file = async_std::fs::File::open(&path).await.unwrap();
    let t = postern_async_std::Transport::builder("127.0.0.1")
        .port(server.port())
        .security(postern_async_std::Security::Plaintext)
        .build()
        .unwrap();
    let envelope = postern_async_std::Envelope::new(
        postern_async_std::Mailbox::parse("a@example.com").unwrap(),
        [postern_async_std::Mailbox::parse("b@example.com").unwrap()],
    );
    t.send(&envelope, postern_async_std::message_from_reader(file))
        .await
        .unwrap();
    assert_eq!(
        server.messages()[0].data.as_deref(),
        Some(&b"Subject: from a file\r\n\r\nline one\r\n.dot line\r\n"[..])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
