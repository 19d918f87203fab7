//! Starting generation 0 beneath the supervisor: signals blocked and read from a signalfd,
//! job control ignored, the socket-activation fds and one end of a socketpair passed on.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::sys;

use super::{say, Generation, Supervisor, FORWARDED};

/// An all-zero `sigaction` (no handler, empty mask, no flags), to fill in.
fn zeroed_sigaction() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Ignored by the supervisor, given back as they were to the generations.
const JOB_CONTROL: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

pub(super) fn start(ready_timeout: Duration) -> io::Result<Supervisor> {
    let me = std::process::id();
    // Sockets passed by socket activation to this process go on to generation 0 as they are
    // (fds 3.., not close-on-exec). Listed before this process opens any fd of its own, so a
    // `LISTEN_FDS` that claims more than was passed cannot make it close one of its own.
    let listen_fds: Vec<RawFd> = (0..listen_fds_for_us(me))
        .map(|i| sys::LISTEN_FDS_START + i)
        .filter(|&fd| sys::fd_is_open(fd))
        .collect();
    if me != 1 {
        // SAFETY: prctl with integer arguments only changes this process's attributes.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Blocked signals are queued even for PID 1 (which the kernel otherwise spares every
    // signal it has no handler for) and read from a signalfd. The mask is inherited across
    // exec: generation 0 gets the previous one back.
    let mut mask = SigSet::empty();
    for sig in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        mask.add(*sig);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    // Job control would stop the supervisor alone (the generations are in a process group of
    // their own) and leave them unheard: Ctrl-Z does nothing, the service goes on.
    let mut job_control = [(0, zeroed_sigaction()); JOB_CONTROL.len()];
    for (slot, sig) in job_control.iter_mut().zip(JOB_CONTROL) {
        let mut ignore = zeroed_sigaction();
        ignore.sa_sigaction = libc::SIG_IGN;
        slot.0 = sig;
        // SAFETY: sigaction reads `ignore` and writes the previous disposition into `slot.1`,
        // both live locals; SIG_IGN installs no handler code.
        unsafe { libc::sigaction(sig, &ignore, &mut slot.1) };
    }
    let (sock, theirs) = UnixDatagram::pair()?;
    sock.set_nonblocking(true)?;

    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(sys::ENV_SUPERVISOR_FD, theirs.as_raw_fd().to_string())
        .env_remove(sys::ENV_NOTIFY_SOCKET)
        // Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        // passes it on once, to the current generation.
        .process_group(0);
    // `LISTEN_PID` would name the supervisor, so it goes.
    if !listen_fds.is_empty() {
        cmd.env_remove(sys::ENV_LISTEN_PID);
    }
    let fd = theirs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
    // sigprocmask and sigaction, which are async-signal-safe: it lets exactly the generation's
    // end of the socketpair cross exec, and gives it back the signal mask and the job-control
    // dispositions the supervisor was started with.
    unsafe {
        cmd.pre_exec(move || {
            sys::set_cloexec(fd, false)?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None)?;
            for (sig, previous) in &job_control {
                libc::sigaction(*sig, previous, std::ptr::null_mut());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    for fd in listen_fds {
        // SAFETY: socket activation gave these open fds to this process (listed before it
        // opened any of its own); generation 0 has its own copies now and nothing here refers
        // to them.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pid = child.id() as i32;
    // The child is reaped with waitpid(-1), like every other; `Child` is not needed.
    drop(child);
    let upstream = std::env::var_os(sys::ENV_NOTIFY_SOCKET).filter(|s| !s.is_empty());
    say(format_args!(
        "started generation 0 as pid {pid}; this pid stays for the service's life ({}=0 turns this off)",
        sys::ENV_SUPERVISOR
    ));
    let current = pid;
    let alive = vec![Generation::new(pid)];
    Ok(Supervisor {
        me,
        sock,
        signals,
        upstream,
        current,
        alive,
        statuses: HashMap::new(),
        ready: false,
        held_hup: false,
        stop: None,
        told_upstream_ready: false,
        awaiting: None,
        reloading: None,
        ready_timeout,
    })
}

/// How many socket-activation fds are addressed to this process (`LISTEN_PID` is us or absent).
fn listen_fds_for_us(me: u32) -> RawFd {
    let Some(count) = std::env::var(sys::ENV_LISTEN_FDS)
        .ok()
        .and_then(|c| c.trim().parse::<RawFd>().ok())
    else {
        return 0;
    };
    match std::env::var(sys::ENV_LISTEN_PID) {
        Ok(pid) if pid.trim().parse::<u32>().ok() != Some(me) => 0,
        _ => count.clamp(0, 1024),
    }
}
