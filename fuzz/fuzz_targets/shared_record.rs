//! Fuzz target `shared_record`: see `postern_fuzz::shared_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (Vec<u8>, Vec<postern_fuzz::SharedOp>)| {
    postern_fuzz::shared_record(input)
});
