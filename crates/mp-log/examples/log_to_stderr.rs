//! CPython's `log_to_stderr`: five processes each log through `get_logger()`, and every line names its
//! process (the parent prints them all: the children forward their records to it).
//!
//! Expected output (checked by `cargo xtask test`; on standard error):
//! ```text sorted stderr
//! [INFO/MainProcess] starting 4 workers
//! [INFO/Process-1] doing some work
//! [INFO/Process-2] doing some work
//! [INFO/Process-3] doing some work
//! [INFO/Process-4] doing some work
//! [INFO/MainProcess] all done
//! ```

use mp_process::Process;

fn work() {
    mp_log::get_logger().info("doing some work");
    mp_log::get_logger().debug("not shown at INFO");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mp_process::init();
    let logger = mp_log::log_to_stderr(log::LevelFilter::Info)?;
    logger.info("starting 4 workers");
    let mut workers: Vec<_> = (0..4).map(|_| Process::new(work, ())).collect();
    for w in &mut workers {
        w.start()?;
    }
    for w in &mut workers {
        w.join()?;
    }
    logger.info("all done");
    Ok(())
}
