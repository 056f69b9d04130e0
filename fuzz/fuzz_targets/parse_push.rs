//! `parse_push` on any bytes: never panics, and what it accepts it reads
//! back the same after encoding it again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(events) = eventhook::wire::parse_push(body) else { return };
    let encoded = eventhook::wire::encode_push(&events);
    match eventhook::wire::parse_push(&encoded) {
        Ok(again) => assert_eq!(again, events, "a push read, written and read again changed"),
        Err(error) => panic!("the encoder wrote a push the parser refuses: {error}"),
    }
});
