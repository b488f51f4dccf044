//! Fuzz target `sasl_challenge`: see `postern_fuzz::sasl_challenge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::sasl_challenge(input));
