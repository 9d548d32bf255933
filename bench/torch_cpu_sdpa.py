#!/usr/bin/env python3
"""Times PyTorch's CPU scaled_dot_product_attention on given shapes; one JSON line per case.

  python3 torch_cpu_sdpa.py --dtype bfloat16 --case 1,1024,1024,8,64 --case 1,2048,2048,8,128,causal [--backward]

A case is B,Mq,Mkv,H,K[,causal][,kv=Hkv] as for `fmha bench` (causal is bottom-right, which is top-left when
Mq = Mkv; kv=Hkv gives K and V Hkv heads, grouped-query attention through SDPA's enable_gqa).
FLOPs = 4*B*H*Mq*Mkv*K, halved when causal with Mq = Mkv, times 3.5 with --backward. Median of --repeats
runs after one warm-up, on all cores.
"""
import argparse, json, os, statistics, time
import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

def run_case(case, dtype, backward, repeats):
    parts = case.split(",")
    B, Mq, Mkv, H, K = map(int, parts[:5])
    causal = "causal" in parts[5:]
    Hkv = next((int(part[3:]) for part in parts[5:] if part.startswith("kv=")), H)
    make = lambda heads, m, seed: torch.randn(B, heads, m, K, dtype=dtype,
                                              generator=torch.Generator().manual_seed(seed)).requires_grad_(backward)
    q, k, v = make(H, Mq, 1), make(Hkv, Mkv, 2), make(Hkv, Mkv, 3)
    grad = torch.randn(B, H, Mq, K, dtype=dtype)
    mask = None
    if causal and Mq != Mkv:  # bottom-right causal, as fmha bench uses
        mask = torch.ones(Mq, Mkv, dtype=torch.bool).tril(diagonal=Mkv - Mq)

    def once():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                             enable_gqa=Hkv != H)
        if backward:
            out.backward(grad)

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    flops = 4 * B * H * Mq * Mkv * K / (2 if causal and Mq == Mkv else 1) * (3.5 if backward else 1)
    return dict(op="torch-sdpa", device="cpu", dtype=[n for n, d in DTYPES.items() if d == dtype][0], B=B, Mq=Mq,
                Mkv=Mkv, H=H, K=K, Hkv=Hkv, case=case, causal=causal, mode="fwd+bwd" if backward else "fwd", ms=ms,
                tflops=flops / (ms * 1e-3) / 1e12, threads=torch.get_num_threads(), torch=torch.__version__)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", action="append", choices=DTYPES)
    parser.add_argument("--case", action="append", default=[])
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    for name in args.dtype or ["float32"]:
        for case in args.case:
            print(json.dumps(run_case(case, DTYPES[name], args.backward, args.repeats)), flush=True)
