//! Arbitrary peer bytes through a session's receive path: framing, decoding with the session's
//! wire context, the FSM, and encoding of everything it sends. The first octet selects active or
//! passive, a handshake into Established, 2- or 4-octet AS, iBGP, reconnect, graceful restart and
//! hold 0 (`purelb_bgp::fuzzing::control`). See README.md.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    purelb_bgp::fuzzing::fuzz_session_receive(data);
});
