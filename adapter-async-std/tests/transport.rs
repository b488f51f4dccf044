//! The shared transport scenarios on async-std, against the loopback peers
//! and Postfix's smtp-sink.

use postern_async_std::{AsyncStd, message_from_reader};
use postern_test_support::scenarios;

postern_test_support::transport_tests!(
    #[async_std::test]
    postern_async_std::AsyncStd
);

#[async_std::test]
async fn streamed_from_an_async_std_file() {
    scenarios::message_from_file::<AsyncStd, _, _>(|path| async move {
        message_from_reader(async_std::fs::File::open(path).await.unwrap())
    })
    .await;
}
