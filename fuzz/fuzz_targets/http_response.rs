//! Fuzz target `http_response`: see `postern_fuzz::http_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::http_response(input));
