//! Runs every example and compares its standard output with the `Expected output` block of its `//!` doc.
//!
//! In the expected text, `{n}` matches a (possibly negative) integer; a block opened with ```` ```text sorted ````
//! is compared with both sides' lines sorted (for output whose order varies), and one marked `stderr`
//! (```` ```text sorted stderr ````) with the example's standard error instead of its output. Each example runs under a watchdog,
//! and xtask is a child subreaper while it runs, so a process an example leaves behind is caught.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, root, run_cmd, target_dir};

const TIMEOUT: Duration = Duration::from_secs(120);

/// An example: the package it belongs to, its name, its source file.
struct Example {
    package: String,
    name: String,
    source: PathBuf,
}

fn find() -> Result<Vec<Example>, String> {
    let mut found = Vec::new();
    let mut dirs = vec![("mp".to_owned(), root().join("examples"))];
    let crates = std::fs::read_dir(root().join("crates")).map_err(|e| e.to_string())?;
    for krate in crates.filter_map(Result::ok) {
        dirs.push((krate.file_name().to_string_lossy().into_owned(), krate.path().join("examples")));
    }
    for (package, dir) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        files.sort();
        for source in files {
            let name = source.file_stem().expect("file name").to_string_lossy().into_owned();
            found.push(Example { package: package.clone(), name, source });
        }
    }
    Ok(found)
}

/// The lines of the ```text block that follows "Expected output" in the file's `//!` comments, whether the
/// block is marked `sorted` (lines whose order varies between runs: both sides are sorted first), and whether it
/// is marked `stderr` (the example's standard error is compared instead of its standard output).
fn expected(source: &Path) -> Option<(Vec<String>, bool, bool)> {
    let text = std::fs::read_to_string(source).ok()?;
    let docs: Vec<&str> =
        text.lines().map_while(|l| l.strip_prefix("//!")).map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
    let start = docs.iter().position(|l| l.starts_with("Expected output"))?;
    let open = start + docs[start..].iter().position(|l| l.starts_with("```text"))?;
    let close = open + 1 + docs[open + 1..].iter().position(|l| l.starts_with("```"))?;
    let sorted = docs[open].split_whitespace().any(|w| w == "sorted");
    let stderr = docs[open].split_whitespace().any(|w| w == "stderr");
    Some((docs[open + 1..close].iter().map(|l| (*l).to_owned()).collect(), sorted, stderr))
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("{n}");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for part in parts {
        let digits = rest.strip_prefix('-').unwrap_or(rest);
        let n = digits.len() - digits.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if n == 0 {
            return false;
        }
        rest = &digits[n..];
        match rest.strip_prefix(part) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

pub(crate) fn run_all() -> Result<Vec<(String, bool)>, String> {
    let examples = find()?;
    let mut packages: Vec<&str> = examples.iter().map(|e| e.package.as_str()).collect();
    packages.dedup();
    let mut results = Vec::new();
    become_subreaper();
    for package in packages {
        run_cmd(cargo().args(["build", "--quiet", "-p", package, "--examples"]))?;
        for example in examples.iter().filter(|e| e.package == package) {
            let ok = check(example);
            println!("example {}/{} ... {}", example.package, example.name, if ok { "ok" } else { "FAILED" });
            results.push((format!("{}/{}", example.package, example.name), ok));
        }
    }
    Ok(results)
}

fn check(example: &Example) -> bool {
    let Some((mut expected, sorted, stderr)) = expected(&example.source) else {
        println!("  {} has no `Expected output` ```text block in its //! docs", example.source.display());
        return false;
    };
    let binary = target_dir().join("debug/examples").join(&example.name);
    let out_path = std::env::temp_dir().join(format!("xtask-example-{}.out", std::process::id()));
    let Ok(out) = std::fs::File::create(&out_path) else {
        return false;
    };
    let (stdout, errout) = if stderr { (Stdio::null(), Stdio::from(out)) } else { (Stdio::from(out), Stdio::null()) };
    let mut child = match Command::new(&binary).stdin(Stdio::null()).stdout(stdout).stderr(errout).spawn() {
        Ok(child) => child,
        Err(e) => {
            println!("  cannot run {}: {e}", binary.display());
            return false;
        }
    };
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            _ if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let mut ok = true;
    match status {
        None => {
            println!("  watchdog: still running after {TIMEOUT:?}, killed");
            ok = false;
        }
        Some(s) if !s.success() => {
            println!("  exited with {s}");
            ok = false;
        }
        Some(_) => {}
    }
    let mut lines: Vec<&str> = output.lines().collect();
    if sorted {
        lines.sort_unstable();
        expected.sort_unstable();
    }
    if lines.len() != expected.len() || !expected.iter().zip(&lines).all(|(p, l)| line_matches(p, l)) {
        println!("  expected:\n    {}\n  got:\n    {}", expected.join("\n    "), lines.join("\n    "));
        ok = false;
    }
    let left = leftovers();
    if !left.is_empty() {
        println!("  left processes running: {left:?}");
        ok = false;
    }
    ok
}

fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory of ours.
    unsafe {
        prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1, 0, 0, 0)
    };
}

unsafe extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Processes reparented to xtask by an example; given a moment to end, then killed and reported.
fn leftovers() -> Vec<u32> {
    let me = std::process::id();
    let scan = || -> Vec<u32> {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG (1) never blocks.
        while unsafe { waitpid(-1, &mut status, 1) } > 0 {}
        std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .ok()
                            .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok())
                            == Some(me)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = scan();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = scan();
    }
    for pid in &left {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { kill(*pid as i32, 9) };
    }
    left
}
