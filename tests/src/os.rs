//! The few operating-system calls the process tests need, behind safe
//! functions: the machine's monotonic clock, signals, and dying with the
//! parent.

/// `CLOCK_MONOTONIC` in nanoseconds. One clock for every process on the
/// machine, so times recorded by different node processes compare
/// directly (it also runs while a process is stopped).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux");
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

/// A signal the tests send to a node process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGSTOP: pause (cannot be caught).
    Stop,
    /// SIGCONT: resume.
    Cont,
    /// SIGKILL: die at once.
    Kill,
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let number = match signal {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
        Signal::Kill => libc::SIGKILL,
    };
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    match unsafe { libc::kill(pid, number) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Makes this process receive SIGKILL when the thread that started it
/// exits, so that a failed or timed-out test leaves no node behind; exits
/// at once if that parent is already gone.
pub fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        eprintln!(
            "cannot ask to die with the parent: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: getppid(2) has no arguments and cannot fail.
    if unsafe { libc::getppid() } == 1 {
        std::process::exit(1);
    }
}
