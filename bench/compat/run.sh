#!/usr/bin/env bash
# Mixed-version hot restarts: the counter built from an older commit (default: 8233b68, the last
# release without connection hand-over) and from this checkout replace each other by SIGHUP:
# old → new, new → old, old → new. Each restart must succeed and keep the counter.
#   bench/compat/run.sh [commit]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
commit="${1:-8233b68}"
work="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q "$work/src" "$commit"
(cd "$work/src" && CARGO_TARGET_DIR="$work/target-old" cargo build -q --example counter)
(cd "$root" && cargo build -q --example counter)
python3 "$root/bench/compat/compat.py" "$work/target-old/debug/examples/counter" \
    "$root/target/debug/examples/counter" "$work"
