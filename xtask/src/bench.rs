//! `cargo xtask bench`: placeholder replaced below.
pub(crate) fn run(_: &[String]) -> Result<(), String> {
    Ok(())
}
