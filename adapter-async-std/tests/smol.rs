//! The async-std adapter under smol's executor: it only needs the futures-io
//! traits and the async-io reactor, which smol shares.

#[test]
fn sends_under_smol() {
    smol::block_on(
        postern_test_support::scenarios::plaintext_partial_delivery::<postern_async_std::AsyncStd>(
        ),
    );
    smol::block_on(postern_test_support::scenarios::starttls_password::<
        postern_async_std::AsyncStd,
    >());
}
