//! Against the real peers (Dovecot, Postfix, oidc-provider) started by
//! `tests/peers/start.sh`; skipped unless `POSTERN_PEERS_ENV` is set.

postern_test_support::peer_tests!(
    #[async_std::test]
    postern_async_std::AsyncStd
);
