#!/usr/bin/env bash
# Benchmarks FMHA's CPU operators against PyTorch's CPU SDPA on the same shapes, in one run, and
# prints the ratios and the fraction of the machine's FMA peak (measured in the same run).
#
#   bench/compare_cpu.sh            # needs torch in bench/.venv: create it with --install
#   bench/compare_cpu.sh --install  # first: python3 -m venv bench/.venv && pip install torch (from PyPI)
#
# Not part of CI. Environment: REPEATS (default 5), CASES (space-separated B,Mq,Mkv,H,K[,causal]).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=bench/.venv
if [[ "${1:-}" == "--install" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy
fi
[[ -x "$venv/bin/python" ]] || { echo "no $venv: run bench/compare_cpu.sh --install first" >&2; exit 2; }
repeats=${REPEATS:-5}
cases=${CASES:-"1,1024,1024,8,64 1,2048,2048,8,128 1,2048,2048,8,128,causal 1,4096,4096,4,128"}
case_args=(); for c in $cases; do case_args+=(--case "$c"); done
swift build -c release --product fmha >&2
out=$(mktemp -d)
for mode in fwd bwd; do
    flag=(); [[ $mode == bwd ]] && flag=(--backward)
    for dtype in float32 bfloat16 float16; do
        .build/release/fmha bench --json --dtype "$dtype" --repeats "$repeats" "${case_args[@]}" "${flag[@]}" >> "$out/ours.jsonl"
        "$venv/bin/python" bench/torch_cpu_sdpa.py --dtype "$dtype" --repeats "$repeats" "${case_args[@]}" "${flag[@]}" >> "$out/torch.jsonl"
    done
done
.build/release/fmha bench --json --fma-peak --repeats 1 --case 1,64,64,1,64 | grep fma_peak >> "$out/ours.jsonl"
python3 bench/compare_cpu.py "$out/ours.jsonl" "$out/torch.jsonl"
rm -rf "$out"
