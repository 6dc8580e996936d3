//! `tracing` users (feature `tracing`): [`LogLayer`] turns `tracing` events into `log` records, which mp's
//! logger forwards from children like any other; [`forward_tracing`] gives every child a subscriber with it.
//!
//! In the parent, children's events arrive as `log` records through the inner logger, with their level,
//! target, module path, file, line, message and fields (as key-values, with `process_name`, `pid` and `seq`);
//! a `tracing-log` bridge as the inner logger turns them back into `tracing` events there.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// A `tracing_subscriber` layer that hands every event to `log`'s global logger as a `log` record: in a tree
/// with mp's logger installed, a child's events are forwarded to the parent.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// // In the parent: its own events go to the inner logger too; children get the same layer.
/// let _ = tracing_subscriber::registry().with(mp_log::LogLayer).try_init();
/// mp_log::forward_tracing();
/// tracing::info!(answer = 42, "through log");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLayer;

/// The message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.others.push((field.name(), text));
        }
    }
}

/// The fields as `log` key-values.
struct Source<'a>(&'a [(&'static str, String)]);

impl log::kv::Source for Source<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn log::kv::VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for (key, value) in self.0 {
            visitor.visit_pair(log::kv::Key::from_str(key), log::kv::Value::from(value.as_str()))?;
        }
        Ok(())
    }
}

fn level(level: &tracing::Level) -> log::Level {
    match *level {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    }
}

impl<S: tracing::Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = level(meta.level());
        if level > log::max_level() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let source = Source(&fields.others);
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .args(format_args!("{}", fields.message))
                .key_values(&source)
                .build(),
        );
    }
}

/// Gives every child started from now on (and their children), under every start method, a global `tracing`
/// subscriber with [`LogLayer`], so that its events are forwarded like its `log` records. A forked child
/// keeps the subscriber it inherited: give the parent one with [`LogLayer`] too (the example above).
pub fn forward_tracing() {
    mp_process::register_child_setup(child_subscriber);
}

fn child_subscriber() {
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(LogLayer));
}
