//! postern-config: readers for the configuration text that product guides
//! tell admins to write, so that postern takes it verbatim.
//!
//! - [`js`]: the subset of JavaScript object literals that nodemailer
//!   set-ups use (`local.js`, `config.js`): unquoted keys, both quote styles,
//!   template literals with `${process.env.NAME}`, `process.env.NAME`
//!   values (with an optional `|| default`), trailing commas, comments, and
//!   an optional `module.exports =` or a bare `key: value` list.
//!
//! Hand-written rather than a JSON5 crate: JSON5 has no template literals,
//! no `process.env` references and no bare property lists, which are exactly
//! what the guides' blocks contain. A fuzz target checks it.
#![forbid(unsafe_code)]

pub mod js;
