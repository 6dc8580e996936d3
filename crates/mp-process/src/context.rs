//! Contexts: handles that pin one start method (CPython's `get_context`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Builder, ContextError, Process, StartMethod, Target};

/// A fixed start method. Processes made from a context start with its method, whatever the process-wide
/// default is (CPython's `multiprocessing.get_context("spawn")`).
///
/// ```
/// # mp_process::init();
/// use mp_process::{StartMethod, get_context};
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// let ctx = get_context(StartMethod::Spawn)?;
/// let mut p = ctx.process(double, 21);
/// p.start()?;
/// assert_eq!(p.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// The context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process running `target(args)` with this context's start method (see [`Process::new`]).
    pub fn process<F, M, A>(&self, target: F, args: A) -> Process<F::Output>
    where
        F: Target<M, A>,
        F::Output: Serialize + DeserializeOwned + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        M: 'static,
    {
        self.builder().target(target, args)
    }

    /// A [`Builder`] preset to this context's start method.
    pub fn builder(&self) -> Builder {
        Builder::new().start_method(self.method)
    }
}

/// The context for `method`; [`ContextError::Unsupported`] where the platform lacks it.
pub fn get_context(method: StartMethod) -> Result<Context, ContextError> {
    if method.is_supported() { Ok(Context { method }) } else { Err(ContextError::Unsupported(method)) }
}

/// The context of the process-wide default start method (CPython's `multiprocessing.get_context()`).
pub fn default_context() -> Context {
    Context { method: crate::get_start_method() }
}
