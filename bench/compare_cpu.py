#!/usr/bin/env python3
"""Prints one table of FMHA's CPU operators against PyTorch's CPU SDPA, from JSON lines that
`fmha bench --json --fma-peak` and torch_cpu_sdpa.py wrote for the same cases in the same run.

  python3 compare_cpu.py ours.jsonl torch.jsonl
"""
import json, sys

def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]

ours, theirs = load(sys.argv[1]), load(sys.argv[2])
peak = next((r["fma_peak_gflops"] for r in ours if "fma_peak_gflops" in r), None)


def kv_heads(r):
    """K/V heads: `fmha bench --json` and torch_cpu_sdpa.py both write Hkv (older rows without it were dense)."""
    return r.get("Hkv", r["H"])


key = lambda r: (r["dtype"], r["B"], r["Mq"], r["Mkv"], r["H"], r["K"], kv_heads(r), r["causal"], r["mode"])
torch_rows = {key(r): r for r in theirs}
full_rows = {key(r)[:7] + (r["mode"],): r for r in ours if "op" in r and not r["causal"]}
print(f"FMA peak (float32, all threads, measured in this run): {peak:.1f} GFLOP/s" if peak else "FMA peak: not measured")
header = ("dtype", "B,Mq,Mkv,H,K", "Hkv", "causal", "mode", "FMHA op", "FMHA GFLOP/s", "torch GFLOP/s", "ratio", "% FMA peak", "causal speed-up")
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for r in ours:
    if "op" not in r:
        continue
    t = torch_rows.get(key(r))
    g = r["tflops"] * 1000
    tg = t["tflops"] * 1000 if t else None
    speedup = ""
    if r["causal"]:
        full = full_rows.get(key(r)[:7] + (r["mode"],))
        if full:
            speedup = f"{full['ms'] / r['ms']:.2f}x"
    print("| " + " | ".join([
        r["dtype"], f"{r['B']},{r['Mq']},{r['Mkv']},{r['H']},{r['K']}", str(kv_heads(r)), "yes" if r["causal"] else "no", r["mode"], r["op"],
        f"{g:.1f}", f"{tg:.1f}" if tg else "-", f"{g / tg:.2f}" if tg else "-",
        f"{100 * g / peak:.0f}%" if peak else "-", speedup]) + " |")
