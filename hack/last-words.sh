#!/usr/bin/env bash
# Runs COMMAND with its output also copied to LOG. When it fails, the failing tests' own
# words are printed again at the very end: CI keeps only the tail of the output, which the
# local cluster's log dump (printed after a failure) would otherwise fill.
#
#   hack/last-words.sh LOG -- COMMAND [ARGS...]
set -uo pipefail
log="$1"; shift
[ "${1:-}" = "--" ] && shift
mkdir -p "$(dirname "$log")"
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "---- failed (exit $rc): $* ----"
  echo "---- what the failing tests said (all of it: $log) ----"
  grep -E -A14 "panicked at|^failures:$|^test .* FAILED$|^error(\[|:)" "$log" | tail -n 100
fi
exit "$rc"
