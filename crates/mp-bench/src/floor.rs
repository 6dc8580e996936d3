//! The raw floors: the same work done with bare system calls, nothing of mp in the way.

use std::ffi::CString;

use crate::EXIT_AT_ONCE;

/// `_exit(0)`.
pub(crate) fn exit_now() -> ! {
    // SAFETY: _exit is always sound to call.
    unsafe { libc::_exit(0) }
}

/// `fork()`, the child `_exit`s at once, the parent `waitpid`s.
pub(crate) fn fork_exit_wait() {
    // SAFETY: the child calls only _exit, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        exit_now();
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// `posix_spawn` of this same binary, which exits as soon as `main` starts, then `waitpid`.
pub(crate) fn posix_spawn_self() {
    let path = c"/proc/self/exe";
    let arg0 = CString::new("mp-bench").expect("no NUL");
    let argv = [arg0.as_ptr().cast_mut(), std::ptr::null_mut()];
    let mut env: Vec<CString> = std::env::vars()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .chain(CString::new(format!("{EXIT_AT_ONCE}=1")).ok())
        .collect();
    env.shrink_to_fit();
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let mut pid = 0;
    // SAFETY: all pointers are valid NUL-terminated strings in null-terminated arrays that outlive the call.
    let r = unsafe {
        libc::posix_spawn(&mut pid, path.as_ptr(), std::ptr::null(), std::ptr::null(), argv.as_ptr(), envp.as_ptr())
    };
    assert_eq!(r, 0, "posix_spawn failed");
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}
