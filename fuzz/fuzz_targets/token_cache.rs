//! Fuzz target `token_cache`: see `postern_fuzz::token_cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: Vec<postern_fuzz::CacheOp>| postern_fuzz::token_cache(input));
