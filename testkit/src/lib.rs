//! The harness of the integration tests in `tests/`: runs the examples as real processes on
//! loopback and reads what they do from outside (pids, exit statuses, `/proc`, the control
//! socket, the state file), the way an operator would.
//!
//! The test process makes itself a child subreaper, so every generation of the service ends up
//! as its child when its parent exits; one reaper ([`procs::reap`]) collects exit statuses for
//! all tests of the binary. No test may call `Child::wait`: statuses are read from the reaper
//! only.
//!
//! A library crate (not a `mod common;` compiled into each test binary): what one binary does
//! not use is not dead code, and each concern has its file.

pub mod components;
pub mod control;
pub mod faults;
pub mod http;
pub mod keepalive;
pub mod podman;
pub mod procs;
pub mod service;

pub use components::*;
pub use control::*;
pub use faults::*;
pub use http::*;
pub use procs::*;
pub use service::*;
