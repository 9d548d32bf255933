#!/usr/bin/env python3
"""FMHA's CUDA decoding forward against PyTorch's flash (FA2) and cuDNN backends on the same
shapes, in one run on the GPU machine, in GB/s of K and V read (2·B·Hkv·KV·D elements: the byte
floor of a step; queries and outputs are a rounding error beside it).

  python3 bench/compare_decode.py --fmha .build/release/fmha [--dtype bf16 --dtype f16] [--repeats 20]
                                  [--case B,Hq,Hkv,D,KV[,q=Mq]] [--paged 16] [--kv-cache int4 --kv-cache fp8]
                                  [--json-out table.json]

Default cases: B in {1, 8, 32, 128} × KV in {512, 4096, 32768, 131072} with 32 query heads over 8
K/V heads of 128 (rows whose cache would pass 40 GB are left out), MHA 32/32 at B = 8 and 32, and 4
queries per sequence at B = 8 and 32. FMHA runs `fmha bench --case B,Mq,KV,Hq,D,kv=Hkv[,causal]` (causal
from the bottom right when Mq > 1); with --paged P its K/V sit in a paged cache of pages of P keys
handed out in a shuffled order, under the paged padded-keys masks (PyTorch's rows stay
contiguous: SDPA has no paged cache). FMHA's times are `fmha bench --json` medians: of whole calls ("wall":
host work, allocation, launches and the wait included) and of the GPU time of the call's kernels
between CUDA events ("GPU": `gpu_ms`); PyTorch's are medians of CUDA-event-timed calls after a
warm-up, as FMHA's GPU time. With --kv-cache F (int4, int4:G, fp8) FMHA also runs over a quantized
cache (`fmha bench --kv-cache F`); its columns give GB/s of the bytes it actually reads (the
`kv_bytes` of the JSON: packed words and scale/shift words), by GPU time, that figure's ratio to
the 16-bit kernel's GB/s on the same case (the issue's ≥ 0.85× target) and the step's speed-up
over the 16-bit cache (GPU time).
"""
import argparse, json, subprocess, warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

from compare_torch import median_ms  # (the same CUDA-event medians as the prefill comparison)

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
DTYPES = {"bf16": (torch.bfloat16, "bfloat16"), "f16": (torch.float16, "float16")}


def default_cases():
    cases = []
    for b in (1, 8, 32, 128):
        for kv in (512, 4096, 32768, 131072):
            if 2 * b * 8 * kv * 128 * 2 <= 40e9:
                cases.append(f"{b},32,8,128,{kv}")
    cases += [f"{b},32,32,128,{kv}" for b in (8, 32) for kv in (4096, 32768)]
    cases += [f"{b},32,8,128,{kv},q=4" for b in (8, 32) for kv in (4096, 32768)]
    return cases


def parse(case):
    parts = case.split(",")
    queries = 1
    if parts[-1].startswith("q="):
        queries = int(parts.pop()[2:])
    b, hq, hkv, d, kv = map(int, parts)
    return b, hq, hkv, d, kv, queries


def kv_bytes(case, element_size=2):
    b, hq, hkv, d, kv, _ = parse(case)
    return 2 * b * hkv * kv * d * element_size


def torch_row(case, dtype, repeats):
    b, hq, hkv, d, kv, queries = parse(case)
    q = torch.randn(b, hq, queries, d, device="cuda", dtype=dtype)
    k, v = (torch.randn(b, hkv, kv, d, device="cuda", dtype=dtype) for _ in range(2))
    # Mq > 1: the queries are the sequence's last (causal from the bottom right), as FMHA's case.
    mask = None
    if queries > 1:
        mask = torch.ones(queries, kv, device="cuda", dtype=torch.bool).tril(kv - queries)
    row = {}
    for name, backend in BACKENDS.items():
        def run(backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=hkv != hq)
        try:
            row[name] = kv_bytes(case) / median_ms(run, repeats) / 1e6
        except Exception as error:
            row[name] = "refused: " + str(error).splitlines()[0][:50]
    del q, k, v
    torch.cuda.empty_cache()
    return row


def fmha_row(binary, case, dtype_name, repeats, paged, op, kv_cache=None):
    b, hq, hkv, d, kv, queries = parse(case)
    spec = f"{b},{queries},{kv},{hq},{d},kv={hkv}" + (",causal" if queries > 1 else "")
    command = [binary, "bench", "--device", "cuda", "--json", "--repeats", str(repeats), "--dtype", dtype_name, "--case", spec]
    if paged:
        command += ["--paged", str(paged)]
    if kv_cache:
        command += ["--kv-cache", kv_cache]
    if op:
        command += ["--op", op]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return "?", "refused: " + (result.stderr.strip().splitlines() or ["?"])[-1][:60], None, None, None
    line = lines[0]
    read = line.get("kv_bytes", kv_bytes(case))
    gpu = read / line["gpu_ms"] / 1e6 if line.get("gpu_ms") else None
    return line["op"], read / line["ms"] / 1e6, line["ms"], gpu, line.get("gpu_ms")


def cell(value):
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def main():
    warnings.filterwarnings("ignore")  # (PyTorch's notes on why a backend refuses a mask)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fmha", default=".build/release/fmha", help="the fmha binary")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="bf16 and/or f16 (default bf16)")
    parser.add_argument("--case", action="append", help="B,Hq,Hkv,D,KV[,q=Mq] (repeatable; default: the table above)")
    parser.add_argument("--paged", action="append", type=int, default=[], help="also run FMHA over a paged cache of pages of this size (repeatable)")
    parser.add_argument("--kv-cache", action="append", default=[], help="also run FMHA over a quantized cache: int4, int4:G or fp8 (repeatable)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--op", help="FMHA forward operator (default: dispatch)")
    parser.add_argument("--json-out", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    print("| dtype | case | FMHA op | wall ms | FMHA GB/s wall / GPU | " + " | ".join(f"paged {p} wall / GPU" for p in args.paged)
          + (" | " if args.paged else "") + "".join(f"{f} GB/s read (GPU) / ×16-bit / step speed-up | " for f in args.kv_cache)
          + "flash GB/s | cuDNN GB/s | ×flash wall / GPU | ×cuDNN wall / GPU |")
    print("|" + " --- |" * (9 + len(args.paged) + len(args.kv_cache)))
    for dtype in args.dtype or ["bf16"]:
        torch_dtype, fmha_dtype = DTYPES[dtype]
        for case in args.case or default_cases():
            op, fmha, ms, gpu, gpu_ms = fmha_row(args.fmha, case, fmha_dtype, args.repeats, None, args.op)
            paged = {p: fmha_row(args.fmha, case, fmha_dtype, args.repeats, p, args.op) for p in args.paged}
            quantized = {f: fmha_row(args.fmha, case, fmha_dtype, args.repeats, None, args.op, f) for f in args.kv_cache}
            peers = torch_row(case, torch_dtype, args.repeats)

            def quantized_cell(f):
                q_gpu, q_gpu_ms = quantized[f][3], quantized[f][4]
                if not isinstance(q_gpu, float) or not isinstance(gpu, float):
                    return f"{cell(quantized[f][1])} | "
                return f"{q_gpu:.0f} / {q_gpu / gpu:.2f} / {gpu_ms / q_gpu_ms:.2f} | "

            def ratios(name):
                if not isinstance(peers[name], float) or not isinstance(fmha, float):
                    return "-"
                return f"{fmha / peers[name]:.2f} / " + (f"{gpu / peers[name]:.2f}" if gpu else "-")
            row = dict(dtype=dtype, case=case, op=op, ms=ms, fmha_gbs=fmha, fmha_gpu_gbs=gpu,
                       paged_gbs={p: (v[1], v[3]) for p, v in paged.items()},
                       quantized={f: dict(gpu_gbs_read=v[3], gpu_ms=v[4]) for f, v in quantized.items()}, **peers)
            rows.append(row)
            print(f"| {dtype} | {case} | {op} | {ms if ms is None else round(ms, 4)} | {cell(fmha)} / {cell(gpu)} | "
                  + "".join(f"{cell(paged[p][1])} / {cell(paged[p][3])} | " for p in args.paged)
                  + "".join(quantized_cell(f) for f in args.kv_cache)
                  + f"{cell(peers['flash'])} | {cell(peers['cudnn'])} | {ratios('flash')} | {ratios('cudnn')} |", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
