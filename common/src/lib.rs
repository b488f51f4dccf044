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
