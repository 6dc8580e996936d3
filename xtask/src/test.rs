//! `cargo xtask test`: the suite once per start method, the doc tests, then the examples.

use crate::{cargo, examples, run_cmd};

const METHODS: [&str; 3] = ["fork", "spawn", "forkserver"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let methods: Vec<&str> = match args {
        [] => METHODS.to_vec(),
        [flag, m] if flag == "--start-method" && METHODS.contains(&m.as_str()) => vec![m.as_str()],
        _ => {
            return Err(format!("usage: cargo xtask test [--start-method {}]", METHODS.join("|")));
        }
    };
    let mut rows: Vec<(String, bool)> = Vec::new();
    for method in &methods {
        println!("\n=== test suite under start method {method} ===");
        let ok = run_cmd(
            cargo().args(["test", "--workspace", "--lib", "--bins", "--tests"]).env("MP_TEST_START_METHOD", method),
        )
        .is_ok();
        rows.push((format!("suite / {method}"), ok));
    }
    println!("\n=== doc tests ===");
    rows.push(("doc tests".into(), run_cmd(cargo().args(["test", "--workspace", "--doc"])).is_ok()));
    println!("\n=== examples ===");
    for (name, ok) in examples::run_all()? {
        rows.push((format!("example {name}"), ok));
    }
    println!("\n{:<40} result", "what");
    for (what, ok) in &rows {
        println!("{what:<40} {}", if *ok { "ok" } else { "FAILED" });
    }
    let failed = rows.iter().filter(|(_, ok)| !ok).count();
    println!("\n{} passed, {failed} failed", rows.len() - failed);
    if failed == 0 { Ok(()) } else { Err(format!("{failed} of {} failed", rows.len())) }
}
