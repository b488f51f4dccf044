//! postern-common: the types both sans-IO cores of postern share, in a leaf
//! crate so that `postern-smtp` and `postern-oauth` still do not depend on
//! each other.
//!
//! - [`Secret`]: the one redacting newtype for passwords, client secrets,
//!   access and refresh tokens, codes and assertions;
//! - [`Diagnosis`]: a recognised failure with a stable id, the set-up step to
//!   fix, the fix, and a link where the provider documents the error;
//! - [`sanitize`]: text from a peer made safe for a terminal or a log;
//! - [`Stage`]: where in the chain (configuration, token, TCP, TLS, SMTP
//!   steps) a failure happened.
#![forbid(unsafe_code)]

mod diagnosis;
mod secret;
mod text;

pub use diagnosis::{Diagnosis, Stage};
pub use secret::Secret;
pub use text::{SHOWN_CHARS, sanitize, sanitize_bytes};

/// Chaining setters for the public fields of a settings struct, so a
/// `#[non_exhaustive]` struct is still set up in one expression:
/// `PoolConfig::default().max_connections(8).idle_timeout(d)`. Each setter
/// takes the field's type and is named after it.
#[doc(hidden)]
#[macro_export]
macro_rules! setters {
    ($ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets `", stringify!($field), "` (chaining).")]
                #[must_use]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
