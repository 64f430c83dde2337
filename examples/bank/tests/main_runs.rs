//! The example binary runs end to end on a fresh SQLite file, and again on the same file.

use std::process::Command;

#[test]
fn the_example_runs_twice_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_bank"))
            .arg(&db)
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("events: bank.Withdrawn, bank.Overdrawn"),
            "{stdout}"
        );
        assert!(stdout.contains("refused: insufficient_funds"), "{stdout}");
        assert!(
            stdout.contains("invalid: bank.Deposit: amount: must be positive"),
            "{stdout}"
        );
        assert!(
            stdout.contains("Ada: balance -225 after 3 movements, fees 25"),
            "{stdout}"
        );
        assert!(
            stdout.contains("replayed balance -225 (view says -225)"),
            "{stdout}"
        );
    }
}
