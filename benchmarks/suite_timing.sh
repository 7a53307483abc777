#!/bin/bash
# The default test suite with every cache cold, at each commit given, one after the other:
#
#     benchmarks/suite_timing.sh 083f915 6d6ac66 [-- extra pytest args]
#
# Each commit is checked out in its own worktree under $OUT (default /tmp/lct_suite_timing) and run
# with a fresh TMPDIR (an empty JAX compilation cache and evaluation cache; tests/conftest.py puts
# both there). Run it on otherwise idle cores: the wall time is the measurement. Prints, per
# commit, the pytest summary and GNU time's wall clock and user CPU.
set -u
OUT=${OUT:-/tmp/lct_suite_timing}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
commits=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  commits+=("$1"); shift
done
unset JAX_COMPILATION_CACHE_DIR LCT_JAX_CACHE
mkdir -p "$OUT"
for c in "${commits[@]}"; do
  tree="$OUT/tree_$c"; tmp="$OUT/tmp_$c"; log="$OUT/suite_$c.log"
  rm -rf "$tmp" && mkdir -p "$tmp"
  [ -d "$tree" ] || git -C "$ROOT" worktree add -f "$tree" "$c" > /dev/null
  echo "=== $c start $(date +%T)"
  (cd "$tree" && /usr/bin/time -v env TMPDIR="$tmp" python -m pytest -q -p no:cacheprovider "${extra[@]}" \
      > "$log" 2>&1)
  echo "rc=$? end $(date +%T)"
  grep -E "passed|failed" "$log" | tail -1
  grep -E "Elapsed|User time" "$log"
done
