//! Fuzz target `reply_parser`: see `postern_fuzz::reply_parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::reply_parser(input));
