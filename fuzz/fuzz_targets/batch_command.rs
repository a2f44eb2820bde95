//! `batch` commands: the command splitter, the per-command query parsing and `$result[...]` substitution.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static HARNESS: OnceLock<crmchat_fuzz::BatchHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("crmchat-fuzz-batch-{}", std::process::id()));
        crmchat_fuzz::BatchHarness::new(&dir)
    });
    crmchat_fuzz::batch_command(harness, data);
});
