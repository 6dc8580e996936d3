//! `cargo xtask bench [GROUP...]` (groups: process, sync, ipc, pool, log): mp's workloads (release build), CPython's on the same workloads, the raw
//! floors, all in one run; the JSON lines as they come, then a table of ratios.

use std::process::{Command, Stdio};

use crate::{cargo, root, run_cmd, target_dir};

/// For each mp workload, the floor workload it is held against.
const FLOOR_OF: &[(&str, &str)] = &[
    ("spawn_join_fork", "fork_exit_wait"),
    ("spawn_join_forkserver", "fork_exit_wait"),
    ("spawn_join_spawn", "posix_spawn_self"),
    ("lock_uncontended", "pshared_mutex_uncontended"),
    ("lock_contended", "lock_contended"),
    ("value_incr_locked", "counter_incr_locked"),
    ("shm_bw", "shm_bw"),
    ("pipe_rtt_obj", "socketpair_rtt"),
    ("pipe_rtt_obj_samecpu", "socketpair_rtt_samecpu"),
    ("pipe_rtt_obj_crosscpu", "socketpair_rtt_crosscpu"),
    ("pipe_rtt_bytes", "socketpair_rtt"),
    ("primes_seed", "primes_seed_limit"),
    ("primes_large", "primes_large_limit"),
];

/// Implementations that are neither mp, CPython nor a floor: Rust peers measured on the same workload.
fn is_peer(implementation: &str) -> bool {
    !matches!(implementation, "mp" | "cpython" | "floor")
}

#[derive(Debug)]
struct Line {
    workload: String,
    implementation: String,
    value: f64,
    unit: String,
}

/// Pulls `"key": value` out of one of our flat JSON lines.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = line[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest[..rest.find([',', '}'])?].trim(),
    })
}

fn parse(line: &str) -> Option<Line> {
    Some(Line {
        workload: field(line, "workload")?.to_owned(),
        implementation: field(line, "impl")?.to_owned(),
        value: field(line, "value")?.parse().ok()?,
        unit: field(line, "unit")?.to_owned(),
    })
}

/// Runs a command, echoing and collecting its stdout lines.
fn collect(cmd: &mut Command) -> Result<Vec<Line>, String> {
    let out = cmd.current_dir(root()).stderr(Stdio::inherit()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    Ok(text.lines().filter_map(parse).collect())
}

pub(crate) fn run(groups: &[String]) -> Result<(), String> {
    run_cmd(cargo().args(["build", "--release", "--quiet", "-p", "mp-bench"]))?;
    let mut lines = collect(Command::new(target_dir().join("release/mp-bench")).args(groups))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&python).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
        lines.extend(collect(Command::new(&python).arg("crates/mp-bench/cpython_bench.py").args(groups))?);
    } else {
        println!("(no {python}: CPython's figures are skipped)");
    }
    let value = |workload: &str, implementation: &str| {
        lines.iter().find(|l| l.workload == workload && l.implementation == implementation).map(|l| l.value)
    };
    println!(
        "\n{:<26} {:>12} {:>12} {:>12} {:>10} {:>12}",
        "workload", "mp", "cpython", "floor", "floor gap", "vs cpython"
    );
    println!("(floor gap: how many times worse than the raw floor; 1.00x is the floor itself)");
    for line in lines.iter().filter(|l| l.implementation == "mp") {
        let floor = FLOOR_OF.iter().find(|(w, _)| *w == line.workload).and_then(|(_, f)| value(f, "floor"));
        let cpython = value(&line.workload, "cpython");
        let lower_is_better = matches!(line.unit.as_str(), "us" | "ms" | "ns" | "s");
        let vs_floor = floor.map(|f| if lower_is_better { line.value / f } else { f / line.value });
        let speedup = cpython.map(|c| if lower_is_better { c / line.value } else { line.value / c });
        let peer = lines.iter().find(|l| l.workload == line.workload && is_peer(&l.implementation)).map(|p| {
            let ratio = if lower_is_better { line.value / p.value } else { p.value / line.value };
            format!("  {} {:.1}: {ratio:.2}x its time", p.implementation, p.value)
        });
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:<26} {:>12} {:>12} {:>12} {:>10} {:>12}   ({}){}",
            line.workload,
            format!("{:.1}", line.value),
            show(cpython),
            show(floor),
            vs_floor.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            speedup.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}x faster")),
            line.unit,
            peer.unwrap_or_default(),
        );
    }
    Ok(())
}
