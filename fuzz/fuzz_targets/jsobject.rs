//! Fuzz target `jsobject`: see `postern_fuzz::jsobject`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| postern_fuzz::jsobject(input));
