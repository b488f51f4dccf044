//! The shared transport scenarios on tokio, against the loopback peers and
//! Postfix's smtp-sink.

use postern_test_support::scenarios;
use postern_tokio::{Tokio, message_from_reader};

postern_test_support::transport_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    postern_tokio::Tokio
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_from_a_tokio_file() {
    scenarios::message_from_file::<Tokio, _, _>(|path| async move {
        message_from_reader(tokio::fs::File::open(path).await.unwrap())
    })
    .await;
}
