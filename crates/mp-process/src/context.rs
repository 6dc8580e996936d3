//! Contexts: the process-wide default start method, and handles that pin one method.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Builder, ContextError, Process, StartMethod, Target};

/// 0 while unset, else `StartMethod::to_u8` (in the block a forked child writes anyway).
static METHOD: &AtomicU8 = &crate::registry::STATE.method;

/// The executable that `Spawn` and the fork server re-execute; `None` means this very program.
static EXECUTABLE: Mutex<Option<CString>> = Mutex::new(None);

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
    Context { method: get_start_method() }
}

/// The platform's default: `ForkServer` on Linux (as Python 3.14), `Spawn` elsewhere.
fn platform_default() -> StartMethod {
    if cfg!(target_os = "linux") { StartMethod::ForkServer } else { StartMethod::Spawn }
}

/// Sets the process-wide default start method. Like CPython, it may be set once: a second call, or a call
/// after the default was already used by a start or by [`get_start_method`], fails with
/// [`ContextError::AlreadySet`] unless `force` is true.
pub fn set_start_method(method: StartMethod, force: bool) -> Result<(), ContextError> {
    if !method.is_supported() {
        return Err(ContextError::Unsupported(method));
    }
    if force {
        METHOD.store(method.to_u8(), Ordering::SeqCst);
        return Ok(());
    }
    METHOD
        .compare_exchange(0, method.to_u8(), Ordering::SeqCst, Ordering::SeqCst)
        .map(drop)
        .map_err(|_| ContextError::AlreadySet)
}

/// The process-wide default start method. Reading it fixes it (CPython's `get_start_method()`): a later
/// [`set_start_method`] then needs `force`.
pub fn get_start_method() -> StartMethod {
    // Read first: after a `fork`, every page written is a copy-on-write fault, and this runs on each start.
    if METHOD.load(Ordering::SeqCst) == 0 {
        let _ = METHOD.compare_exchange(0, platform_default().to_u8(), Ordering::SeqCst, Ordering::SeqCst);
    }
    StartMethod::from_u8(METHOD.load(Ordering::SeqCst)).unwrap_or_else(platform_default)
}

/// Every start method this platform offers, the default first (CPython's `get_all_start_methods()`).
pub fn all_start_methods() -> Vec<StartMethod> {
    let default = platform_default();
    let mut methods = vec![default];
    methods.extend(
        [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer]
            .into_iter()
            .filter(|m| *m != default && m.is_supported()),
    );
    methods
}

/// Sets the program that `Spawn` children and the fork server execute (CPython's `set_executable`). It must
/// be the same build as this program and call [`init`](crate::init) first in `main`; a different build is
/// detected by the child, which refuses to run (see [`ChildErrorKind::BuildMismatch`](crate::ChildErrorKind)).
pub fn set_executable(path: impl AsRef<Path>) {
    let bytes = OsString::from(path.as_ref().as_os_str()).into_vec();
    let path = CString::new(bytes).ok();
    *EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

/// The program to re-execute.
pub(crate) fn executable() -> CString {
    EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| c"/proc/self/exe".to_owned())
}

/// In a child: adopt the parent's default start method.
pub(crate) fn inherit_start_method(method: StartMethod) {
    // A forked child usually has the value already; not writing spares it a copy-on-write fault.
    if METHOD.load(Ordering::SeqCst) != method.to_u8() {
        METHOD.store(method.to_u8(), Ordering::SeqCst);
    }
}
