//! Fuzz target `server`: see `postern_fuzz::server`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: postern_fuzz::ServerInput| postern_fuzz::server(input));
