//! `hotrestart-ctl <control socket> restart|status`: restarts a hotrestart service and waits for
//! the outcome (exit 0 with "restarted: pid A → pid B in N ms", or 1 with the reason), or prints
//! its status. For deploy scripts and systemd's `ExecReload=`.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, command) = match args.as_slice() {
        [socket, command] if command == "restart" || command == "status" => (socket, command),
        _ => {
            eprintln!("usage: hotrestart-ctl <control socket> restart|status");
            return ExitCode::from(2);
        }
    };
    // A restart takes at most the service's ready timeout plus its drain; wait generously.
    match hotrestart::control::request(
        std::path::Path::new(socket),
        command,
        Duration::from_secs(600),
    ) {
        Ok(reply) if reply.succeeded() => {
            print!("{}", reply.text());
            ExitCode::SUCCESS
        }
        Ok(hotrestart::control::Reply::Empty) => {
            eprintln!("hotrestart-ctl: the service closed the connection without an answer");
            ExitCode::FAILURE
        }
        Ok(reply) => {
            eprint!("{}", reply.text());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hotrestart-ctl: {socket}: {e}");
            ExitCode::FAILURE
        }
    }
}
