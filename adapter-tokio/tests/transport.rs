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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_conform() {
    scenarios::store_conformance(&postern_tokio::MemoryStore::new()).await;
    let dir =
        std::env::temp_dir().join(format!("postern-store-conformance-{}", std::process::id()));
    scenarios::store_conformance(&postern_tokio::FileStore::new(&dir).unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Redis store on tokio: the store contract, and two transports sharing
/// one token through it.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_on_tokio() {
    let Some(redis) = postern_test_support::redis::RedisServer::start() else {
        return;
    };
    let store = postern_tokio::RedisStore::new(&redis.url()).unwrap();
    scenarios::store_conformance(&store).await;
    scenarios::shared_tokens_one_fetch_on::<Tokio>(std::sync::Arc::new(store)).await;
}
