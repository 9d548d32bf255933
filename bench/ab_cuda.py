#!/usr/bin/env python3
"""Two `fmha` builds timed alternately on the same shapes in one run: the A/B of a kernel change, on the
GPU machine (METHOD.md: compare within one device call, not across calls).

  python3 bench/ab_cuda.py --old .device/fmha-old --new .device/fmha [--rounds 2] [--dtype bf16 --dtype f16]
                           [--case 2,8192,8192,16,128 ...] [--op cuda-flash] [--new-op OP] [--repeats 20]
                           [--device cuda]

A --case is `fmha bench`'s (B,Mq,Mkv,H,K[,causal][,kv=Hkv] or varlen=L1/L2/...,H,K[,causal]); the defaults are
one shape per head dimension of the GPU.md table. Each round runs `fmha bench --json` for the old build, then
for the new one (each case: one warm-up call, which also compiles, then --repeats timed calls). Every
measurement is printed as it arrives, so a run cut short keeps what it measured; at the end one table gives
each build's best round (TFLOP/s) and new / old.
"""
import argparse, json, subprocess, sys

DTYPES = {"bf16": "bfloat16", "f16": "float16"}
DEFAULT_CASES = ["4,4096,4096,32,64", "2,8192,8192,16,128", "2,8192,8192,16,128,causal", "32,512,512,16,128",
                 "4,4096,4096,8,256"]


def run_build(binary, op, args):
    """TFLOP/s per (dtype, case) from one `fmha bench --json` run of `binary`, printed as they arrive."""
    command = [binary, "bench", "--device", args.device, "--json", "--repeats", str(args.repeats)]
    for dtype in args.dtype:
        command += ["--dtype", DTYPES[dtype]]
    for case in args.case or DEFAULT_CASES:
        command += ["--case", case]
    if op:
        command += ["--op", op]
    results = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            results[(row["dtype"], row["case"])] = row["tflops"]
            print(f"  {binary}: {row['dtype']} {row['case']} {row['tflops']:.2f} TFLOP/s ({row['op']})", flush=True)
    if process.returncode != 0:
        print(f"  {binary} exited with {process.returncode}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", action="append", choices=sorted(DTYPES))
    parser.add_argument("--case", action="append")
    parser.add_argument("--op", help="forward operator (default: dispatch chooses)")
    parser.add_argument("--new-op", help="the new build's operator, when it differs (e.g. a tuning shape)")
    parser.add_argument("--device", default="cuda", help="cuda[:N], or cpu to try the script anywhere")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    args.dtype = args.dtype or ["bf16"]
    rounds = {"old": [], "new": []}
    for index in range(args.rounds):
        print(f"round {index + 1}", flush=True)
        for name in ("old", "new"):
            op = args.new_op if name == "new" and args.new_op else args.op
            rounds[name].append(run_build(getattr(args, name), op, args))
    keys = sorted({key for results in rounds["old"] + rounds["new"] for key in results})
    print(f"\nTFLOP/s, best of {args.rounds} rounds; ratio = new / old")
    print(f"{'dtype':9} {'case':34} {'old':>8} {'new':>8} {'ratio':>6}")
    for key in keys:
        best = {name: max((results[key] for results in rounds[name] if key in results), default=None)
                for name in rounds}
        ratio = f"{best['new'] / best['old']:.3f}" if best["old"] and best["new"] else "-"
        cells = [f"{best[name]:8.2f}" if best[name] else f"{'-':>8}" for name in ("old", "new")]
        print(f"{key[0]:9} {key[1]:34} {cells[0]} {cells[1]} {ratio:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
