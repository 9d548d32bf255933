#!/usr/bin/env python3
"""FMHA's CUDA forward (or forward + backward) against PyTorch's attention backends on the same
shapes, in one run on the GPU machine: FlashAttention-2 (SDPA flash), xFormers' cutlass kernel (SDPA
efficient) and cuDNN. Prints one table with TFLOP/s and FMHA's ratio to each peer.

  python3 bench/compare_torch.py --fmha .build/release/fmha [--dtype bf16 --dtype f16] [--repeats 20]
                                 [--case 4,16384,16,128,causal] [--op cuda-flash] [--json-out table.json]
                                 [--dropout 0.1] [--tensor-bias] [--backward]

--backward times forward + backward (FLOPs counted 3.5x the forward's) and, in a second table, the
backward alone (2.5x): FMHA's from `fmha bench --backward` (the backward timed by itself), PyTorch's
as the forward + backward median minus the forward median.

Default shapes: the GPU.md table (16k tokens, model width 2048: B = 16384 / N, H = 2048 / K, for
K in {64, 128, 256}, N from 512 to 16384, causal and not; plus K = 192 at N = 4096), a varlen batch (block-diagonal causal
over lengths drawn from 100-4000, 16384 tokens, 16 heads of 128) and GQA (B = 4, N = 4096, 32 query
heads over 8 K/V heads of 128, causal). A --case is B,N,H,K[,causal][,kv=Hkv] or
varlen=L1/L2/...,H,K[,causal]. FLOPs = 4·B·H·N²·K (per sequence for varlen), halved when causal.
FMHA runs --op (default cuda-flash; a case it refuses shows the reason). --dropout p and --tensor-bias (a
random [B, H, N, N] additive bias, under the causal mask when causal; dense cases without kv= only) go to
both sides: PyTorch gets dropout_p and attn_mask.
Times: FMHA's are `fmha bench --json` medians (each call synchronised, output allocation
included); PyTorch's are medians of CUDA-event-timed calls after a warm-up.
"""
import argparse, json, random, subprocess, sys

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}
DTYPES = {"bf16": (torch.bfloat16, "bfloat16"), "f16": (torch.float16, "float16")}


def default_cases():
    table = [(64, 4096, False), (64, 4096, True), (128, 512, False), (128, 2048, False), (128, 8192, False),
             (128, 8192, True), (128, 16384, True), (192, 4096, False), (256, 4096, False), (256, 4096, True)]
    cases = [f"{16384 // n},{n},{2048 // k},{k}" + (",causal" if causal else "") for k, n, causal in table]
    rng, lengths = random.Random(0), []
    while sum(lengths) < 16384:
        lengths.append(min(rng.randint(100, 4000), 16384 - sum(lengths)))
    cases.append("varlen=" + "/".join(map(str, lengths)) + ",16,128,causal")
    cases.append("4,4096,32,128,causal,kv=8")
    return cases


def parse(case):
    """(B, N, H, K, causal, Hkv, lengths or None) of a --case."""
    parts = case.split(",")
    causal, kv = False, None
    while parts[-1] == "causal" or parts[-1].startswith("kv="):
        if parts[-1] == "causal":
            causal = True
        else:
            kv = int(parts[-1][3:])
        parts.pop()
    if parts[0].startswith("varlen="):
        lengths = [int(x) for x in parts[0][7:].split("/")]
        return 1, sum(lengths), int(parts[1]), int(parts[2]), causal, None, lengths
    b, n, h, k = map(int, parts)
    return b, n, h, k, causal, kv, None


def flops(case):
    b, n, h, k, causal, _, lengths = parse(case)
    products = sum(x * x for x in lengths) if lengths else b * n * n
    return 4 * h * products * k / (2 if causal else 1)


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def torch_row(case, dtype, repeats, dropout=0.0, tensor_bias=False, backward=False):
    """TFLOP/s (or a reason string) of each PyTorch backend on `case`; with `backward`, of forward
    + backward, and of the backward alone under "<backend>_bwd"."""
    b, n, h, k, causal, kv, lengths = parse(case)
    row = {}
    if tensor_bias and (lengths or kv):
        return {name: "no tensor bias here" for name in BACKENDS}
    if lengths:
        # Varlen goes through the backends' own entry points (SDPA has no varlen); cuDNN has none.
        total, starts = sum(lengths), [0]
        for x in lengths:
            starts.append(starts[-1] + x)
        cu = torch.tensor(starts, device="cuda", dtype=torch.int32)
        q, kk, v = (torch.randn(total, h, k, device="cuda", dtype=dtype, requires_grad=backward) for _ in range(3))
        runs = {
            "flash": lambda: torch.ops.aten._flash_attention_forward(q, kk, v, cu, cu, max(lengths), max(lengths), dropout,
                                                                     causal, False),
            "efficient": lambda: torch.ops.aten._efficient_attention_forward(
                q[None], kk[None], v[None], None, cu, cu, max(lengths), max(lengths), dropout, 1 if causal else 0, False),
        }
        row["cudnn"] = "no varlen"
    else:
        kv_heads = kv or h
        q = torch.randn(b, h, n, k, device="cuda", dtype=dtype, requires_grad=backward)
        kk, v = (torch.randn(b, kv_heads, n, k, device="cuda", dtype=dtype, requires_grad=backward) for _ in range(2))
        mask = None
        if tensor_bias:
            mask = torch.randn(b, h, n, n, device="cuda", dtype=dtype)
            if causal:
                mask = mask.masked_fill(torch.ones(n, n, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
        runs = {}
        for name, backend in BACKENDS.items():
            def run(backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, kk, v, attn_mask=mask, dropout_p=dropout,
                                                          is_causal=causal and mask is None, enable_gqa=kv is not None)
            runs[name] = run
    for name, run in runs.items():
        try:
            forward_ms = median_ms(run, repeats)
            if not backward:
                row[name] = flops(case) / forward_ms / 1e9
                continue
            output = run()
            output = output[0] if isinstance(output, tuple) else output
            grad = torch.randn_like(output)

            def train(run=run, grad=grad):
                out = run()
                (out[0] if isinstance(out, tuple) else out).backward(grad)
            both_ms = median_ms(train, repeats)
            row[name] = 3.5 * flops(case) / both_ms / 1e9
            row[name + "_bwd"] = 2.5 * flops(case) / max(both_ms - forward_ms, 1e-6) / 1e9
        except Exception as error:  # a backend that refuses the case
            row[name] = "refused: " + str(error).splitlines()[0][:60]
    return row


def fmha_row(binary, case, dtype_name, repeats, op, extra=()):
    """(operator, TFLOP/s) of `fmha bench` on `case`, or (operator, reason) when it refuses it."""
    b, n, h, k, causal, kv, lengths = parse(case)
    spec = case if lengths else f"{b},{n},{n},{h},{k}" + (",causal" if causal else "") + (f",kv={kv}" if kv else "")
    command = [binary, "bench", "--device", "cuda", "--json", "--repeats", str(repeats), "--dtype", dtype_name,
               "--op", op, "--case", spec, *extra]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return op, "refused: " + (result.stderr.strip().splitlines() or ["?"])[-1][:60], None
    line = lines[0]
    if "backward_op" in line:
        return line["op"] + "/" + line["backward_op"], line["tflops"], line["backward_tflops"]
    return line["op"], line["tflops"], None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fmha", default=".build/release/fmha", help="the fmha binary")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="bf16 and/or f16 (default both)")
    parser.add_argument("--case", action="append", help="a shape (repeatable; default: the GPU.md table, varlen, GQA)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--op", default="cuda-flash", help="FMHA forward operator (default cuda-flash)")
    parser.add_argument("--json-out", help="also write the rows as JSON here")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout probability on both sides")
    parser.add_argument("--tensor-bias", action="store_true", help="a random [B, H, N, N] bias on both sides")
    parser.add_argument("--backward", action="store_true", help="forward + backward, and the backward alone")
    args = parser.parse_args()
    cases = args.case or default_cases()
    rows = []
    extra = (["--dropout", str(args.dropout)] if args.dropout else []) + (["--tensor-bias"] if args.tensor_bias else []) \
        + (["--backward"] if args.backward else [])
    for dtype_key in args.dtype or ["bf16", "f16"]:
        torch_dtype, fmha_dtype = DTYPES[dtype_key]
        for case in cases:
            op, tflops, backward_tflops = fmha_row(args.fmha, case, fmha_dtype, args.repeats, args.op, extra)
            rows.append(dict(dtype=dtype_key, case=case, op=op, fmha=tflops, fmha_bwd=backward_tflops,
                             **torch_row(case, torch_dtype, args.repeats, args.dropout, args.tensor_bias, args.backward)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    def print_table(title, suffix):
        header = ["dtype", "case", "fmha op", "fmha", "flash", "ratio", "efficient", "ratio", "cudnn", "ratio"]
        table = [header]
        for row in rows:
            ours = row["fmha" + suffix]
            cells = [row["dtype"], row["case"], row["op"], f"{ours:.1f}" if isinstance(ours, float) else str(ours)[:40]]
            for peer in ["flash", "efficient", "cudnn"]:
                value = row.get(peer + suffix, row[peer])
                if not isinstance(value, float):
                    cells += [value[:24], "-"]
                else:
                    cells += [f"{value:.1f}", f"{ours / value:.2f}" if isinstance(ours, float) else "-"]
            table.append(cells)
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        print(title)
        for line in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    if args.backward:
        print_table("TFLOP/s (forward + backward, 3.5x the forward's FLOPs); ratio = FMHA / peer", "")
        print_table("TFLOP/s (backward alone, 2.5x the forward's FLOPs; PyTorch's: fwd+bwd minus fwd)", "_bwd")
    else:
        print_table("TFLOP/s (forward); ratio = FMHA / peer", "")
    if args.json_out:
        with open(args.json_out, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    sys.exit(main())
