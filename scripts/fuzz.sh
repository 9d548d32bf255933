#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that read user input (Sources/FMHAFuzz): .npy bytes, JSON
# text and bias specifications (with their block tables, lowered and walked). Builds the fuzz
# executable with libFuzzer and AddressSanitizer in .build-fuzz, then runs each target for
# SECONDS (default 20) from the seed corpus in fuzz/corpus/<target> (new inputs it finds go to
# .build-fuzz/corpus/<target>, crashes to .build-fuzz/artifacts/). Exits non-zero on a crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]      targets: npy json bias (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(npy json bias)
swift build --sanitize fuzzer --sanitize address -Xswiftc -DFUZZING --product fmha-fuzz --scratch-path .build-fuzz 2>&1 \
  | grep -E "error|warning: unre|Compiling fmha|Build" || true
fuzzer=.build-fuzz/debug/fmha-fuzz
[ -x "$fuzzer" ] || { echo "fuzz.sh: the fuzz build failed" >&2; exit 1; }
mkdir -p .build-fuzz/artifacts
for target in "${targets[@]}"; do
  mkdir -p ".build-fuzz/corpus/$target"
  log=".build-fuzz/$target.log"
  if ! FMHA_FUZZ_TARGET=$target "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -artifact_prefix=".build-fuzz/artifacts/$target-" ".build-fuzz/corpus/$target" "fuzz/corpus/$target" > "$log" 2>&1; then
    echo "fuzz.sh: $target found a crash (log: $log, input: .build-fuzz/artifacts/$target-*)" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1), no crash"
done
