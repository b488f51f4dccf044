//! Fuzz target `token_response`: see `postern_fuzz::token_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: postern_fuzz::TokenInput| postern_fuzz::token_response(input));
