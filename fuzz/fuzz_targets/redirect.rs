//! Fuzz target `redirect`: see `postern_fuzz::redirect`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::redirect(input));
