//! Fuzz target `client`: see `postern_fuzz::client`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: postern_fuzz::ClientInput| postern_fuzz::client(input));
