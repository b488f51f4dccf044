//! Streams a 1 GiB generated message; peak memory must stay under 32 MiB.
//! A test binary of its own, so the process's peak RSS is this test's.

postern_test_support::large_message_test!(
    #[async_std::test]
    postern_async_std::AsyncStd
);
