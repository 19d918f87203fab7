#!/usr/bin/env bash
# The zero-downtime benchmark: builds hotrestart's counter, the peers (shellflip, ecdysis, a
# plain axum server for the naive restart and the baseline) and the load generator in release
# mode, then prints the tables. Everything listens on 127.0.0.1. Arguments go to hrbench:
#   bench/run.sh            full run (100 restarts per target and mode; several minutes)
#   bench/run.sh --quick    smoke run (10 restarts, short)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --example counter --example streams --example cache
(cd bench/peers && cargo build --release)
(cd bench/load && cargo build --release)
exec bench/load/target/release/hrbench "$@"
