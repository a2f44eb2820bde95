//! `parse_str` on arbitrary text and `parse_request` on arbitrary bytes under each content type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| crmchat_fuzz::params_parse_str(data));
