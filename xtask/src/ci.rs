//! `cargo xtask ci`: what CI runs.

use crate::{cargo, run_cmd};

pub(crate) fn run() -> Result<(), String> {
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run_cmd(cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"))?;
    crate::tidy::run()?;
    crate::test::run(&[])
}
