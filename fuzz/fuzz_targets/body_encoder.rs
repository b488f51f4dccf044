//! Fuzz target `body_encoder`: see `postern_fuzz::body_encoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: postern_fuzz::BodyInput| postern_fuzz::body_encoder(input));
