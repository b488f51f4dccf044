//! Fuzz target `ehlo`: see `postern_fuzz::ehlo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::ehlo(input));
