//! Whether the first process becomes the supervisor.

use crate::sys;

/// Whether the first process becomes a supervisor: the operator's
/// `HOTRESTART_SUPERVISOR=1|0|auto` wins over `#[hot_main(supervisor = ...)]`; `auto` (the
/// default) turns it on where a process is followed by pid: as PID 1 (a container), as the
/// child of an init or of systemd, and in a terminal.
pub(crate) fn wanted(configured: Option<bool>) -> bool {
    if std::env::var_os(sys::ENV_HANDOFF_FD).is_some()
        || std::env::var_os(sys::ENV_SUPERVISOR_FD).is_some()
    {
        return false; // a generation: it has a supervisor, or a predecessor, already
    }
    let setting = std::env::var(sys::ENV_SUPERVISOR).ok();
    match setting.as_deref().map(str::trim) {
        Some("1" | "true" | "on") => return true,
        Some("0" | "false" | "off") => return false,
        Some("auto" | "") | None => {}
        Some(other) => eprintln!(
            "hotrestart: ignoring {}={other:?}: expected 1, 0 or auto",
            sys::ENV_SUPERVISOR
        ),
    }
    configured.unwrap_or_else(|| auto().is_some())
}

/// Why `auto` turns the supervisor on here, if it does.
fn auto() -> Option<&'static str> {
    let ppid = nix::unistd::getppid().as_raw();
    if std::process::id() == 1 {
        return Some("PID 1");
    }
    if ppid == 1 {
        return Some("the child of PID 1");
    }
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    if parent.trim_end() == "systemd" {
        return Some("a systemd service");
    }
    // SAFETY: isatty only inspects the descriptor table.
    if (0..3).any(|fd| unsafe { libc::isatty(fd) } == 1) {
        return Some("in a terminal");
    }
    None
}
