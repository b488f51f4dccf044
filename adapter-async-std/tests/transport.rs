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

#[async_std::test]
async fn stores_conform() {
    scenarios::store_conformance(&postern_async_std::MemoryStore::new()).await;
    let dir = std::env::temp_dir().join(format!(
        "postern-store-conformance-async-std-{}",
        std::process::id()
    ));
    scenarios::store_conformance(&postern_async_std::FileStore::new(&dir).unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Redis store on async-std (the redis crate on smol's executor): the
/// store contract, and two transports sharing one token through it.
#[cfg(feature = "redis")]
#[async_std::test]
async fn redis_store_on_async_std() {
    let Some(redis) = postern_test_support::redis::RedisServer::start() else {
        return;
    };
    let store = postern_async_std::RedisStore::new(&redis.url()).unwrap();
    scenarios::store_conformance(&store).await;
    scenarios::shared_tokens_one_fetch_on::<postern_async_std::AsyncStd>(std::sync::Arc::new(
        store,
    ))
    .await;
}
