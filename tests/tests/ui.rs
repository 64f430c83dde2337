//! Compile-time behaviour of the macros: every supported shape compiles (`ui/pass`), and every
//! mistake fails with a message that says how to fix it, on the offending tokens (`ui/fail`).
//!
//! Regenerate the expected output after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p sourceflow-tests --test ui`, then read every `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
