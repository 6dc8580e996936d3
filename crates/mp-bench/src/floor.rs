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

/// A default (not robust, not error-checking) process-shared pthread mutex, and a counter, in anonymous
/// shared memory.
struct SharedMutex {
    base: *mut u8,
    len: usize,
}

impl SharedMutex {
    fn new() -> Self {
        let len = 4096;
        // SAFETY: a fresh anonymous shared mapping; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap failed");
        let mutex = base.cast::<libc::pthread_mutex_t>();
        // SAFETY: `attr` is initialised before use; `mutex` points into the fresh mapping.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutex_init(mutex, attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        SharedMutex { base: base.cast(), len }
    }

    fn with<T>(&self, f: impl FnOnce(*mut u64) -> T) -> T {
        let mutex = self.base.cast::<libc::pthread_mutex_t>();
        // SAFETY: an initialised process-shared mutex; the counter lies past it in the same mapping.
        unsafe {
            libc::pthread_mutex_lock(mutex);
            let result = f(self.base.add(256).cast::<u64>());
            libc::pthread_mutex_unlock(mutex);
            result
        }
    }
}

impl Drop for SharedMutex {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// ns per lock + unlock of a process-shared pthread mutex, uncontended.
pub(crate) fn mutex_uncontended(n: u32) -> f64 {
    let mutex = SharedMutex::new();
    let start = std::time::Instant::now();
    for _ in 0..n {
        mutex.with(|_| ());
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

/// Seconds for two forked processes to lock + unlock (and, with `count`, increment a shared counter) `n`
/// times each.
pub(crate) fn mutex_contended(n: u32, count: bool) -> f64 {
    let mutex = SharedMutex::new();
    let start = std::time::Instant::now();
    let children: Vec<libc::pid_t> = (0..2)
        .map(|_| {
            // SAFETY: the child only locks, counts and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                for _ in 0..n {
                    mutex.with(|counter| {
                        if count {
                            // SAFETY: the counter lies inside the mapping, and the mutex is held.
                            unsafe { *counter += 1 }
                        }
                    });
                }
                exit_now();
            }
            pid
        })
        .collect();
    for pid in children {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    let secs = start.elapsed().as_secs_f64();
    if count {
        // SAFETY: the counter lies inside the mapping.
        assert_eq!(mutex.with(|counter| unsafe { *counter }), 2 * u64::from(n));
    }
    secs
}

/// GB/s for a forked child writing `bytes` of fresh `MAP_SHARED` memory and the parent reading them back.
pub(crate) fn shm_bw(bytes: usize) -> f64 {
    let start = std::time::Instant::now();
    // SAFETY: a fresh anonymous shared mapping; checked for failure.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap failed");
    // SAFETY: the child writes inside the mapping and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The same work as mp's child: copy 1 MiB chunks from a buffer.
        let chunk = vec![0x5au8; 1 << 20];
        for offset in (0..bytes).step_by(chunk.len()) {
            // SAFETY: inside the mapping; `chunk` is local.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), base.cast::<u8>().add(offset), chunk.len()) };
        }
        exit_now();
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut back = vec![0u8; 1 << 20];
    let mut sum = 0u64;
    for offset in (0..bytes).step_by(back.len()) {
        // SAFETY: inside the mapping; `back` is local.
        unsafe { std::ptr::copy_nonoverlapping(base.cast::<u8>().add(offset), back.as_mut_ptr(), back.len()) };
        sum += u64::from(back[offset % back.len()]);
    }
    std::hint::black_box(sum);
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(base, bytes) };
    bytes as f64 / secs / 1e9
}
