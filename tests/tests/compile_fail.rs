//! Kong's load-time errors and the PDK's phase rules are compile errors, with messages that
//! point at the user's token. Each case is a file in `tests/ui/` with the expected compiler
//! output beside it (`TRYBUILD=overwrite` regenerates them).

#[test]
fn compile_errors_point_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
