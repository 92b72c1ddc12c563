#!/usr/bin/env python
"""Merge throughput on a GPU: random Llama-shaped 1B and 8B models (base + 3 sources, bf16),
sources on the GPU and in pinned host memory, against the device's copy bandwidth.

Made for the lent GPU machine, which has torch, triton and pydantic but no Ray or vLLM:
this needs only `merging/` (the repository root on sys.path). One run of the defaults
takes a few minutes on an H100; each method's first merge (its Triton compilation) is
reported apart from the steady state (best of two).

    python bench/gpu_merge.py [--sizes 1b,8b] [--places gpu,host] [--methods linear,ties] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merging import Merger, parse_plan  # noqa: E402

# hidden, intermediate, layers, vocab, kv heads' share of hidden (GQA): Llama-3.2-1B and Llama-3.1-8B
SHAPES = {"1b": (2048, 8192, 16, 128256, 0.25), "8b": (4096, 14336, 32, 128256, 0.25),
          "tiny": (256, 512, 2, 1000, 0.25)}  # tiny: a smoke run of this script on any machine
METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs_ties", "della")
SOURCES = ("a", "b", "c")


def llama_shapes(size: str) -> dict[str, tuple[int, ...]]:
    hidden, inter, layers, vocab, kv = SHAPES[size]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
                                          "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {f"{p}self_attn.q_proj.weight": (hidden, hidden), f"{p}self_attn.o_proj.weight": (hidden, hidden),
                   f"{p}self_attn.k_proj.weight": (int(hidden * kv), hidden),
                   f"{p}self_attn.v_proj.weight": (int(hidden * kv), hidden),
                   f"{p}mlp.gate_proj.weight": (inter, hidden), f"{p}mlp.up_proj.weight": (inter, hidden),
                   f"{p}mlp.down_proj.weight": (hidden, inter), f"{p}input_layernorm.weight": (hidden,),
                   f"{p}post_attention_layernorm.weight": (hidden,)}
    return shapes


def family(size: str, device: torch.device, place: str) -> dict[str, dict[str, torch.Tensor]]:
    """Base + 3 fine-tunes (base + a small delta), made on `device`, kept where `place` says."""
    def keep(t: torch.Tensor) -> torch.Tensor:
        return t if place == "gpu" else t.to("cpu").pin_memory() if device.type == "cuda" else t

    g = torch.Generator(device=device).manual_seed(0)
    models: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("base", *SOURCES)}
    for name, shape in llama_shapes(size).items():
        base = torch.randn(shape, generator=g, device=device, dtype=torch.bfloat16) * 0.02
        models["base"][name] = keep(base)
        for k in SOURCES:
            models[k][name] = keep(base + torch.randn(shape, generator=g, device=device, dtype=torch.bfloat16) * 0.002)
    return models


def plan(method: str) -> dict:
    params = {"weight": 1 / 3} | ({"density": 0.3} if method not in ("linear", "task_arithmetic") else {})
    p = {"merge_method": method, "models": [{"model": k, "parameters": dict(params)} for k in SOURCES],
         "dtype": "bfloat16", "seed": 0}
    if method == "linear":
        p["models"].insert(0, {"model": "base", "parameters": dict(params)})
    else:
        p["base_model"] = "base"
    return p


def timed_merge(merger: Merger, method: str, device: torch.device) -> float:
    parsed = parse_plan(plan(method), method)
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    started = time.perf_counter()
    for _name, _tensor in merger.merge(parsed):
        pass  # produced and dropped, as when streamed into a serving engine
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return time.perf_counter() - started


def bandwidth(device: torch.device, nbytes: int, src: str) -> float:
    """GB/s read by a copy of `nbytes`: device to device, or pinned host to device."""
    source = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cpu" if src == "host" else device)
    if src == "host":
        source = source.pin_memory()
    target = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        started = time.perf_counter()
        target.copy_(source, non_blocking=True)
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        best = min(best, time.perf_counter() - started)
    return nbytes / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1b,8b")
    parser.add_argument("--places", default="gpu,host")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    copy = bandwidth(device, 1 << 30, "device")
    h2d = bandwidth(device, 1 << 30, "host") if device.type == "cuda" else float("nan")
    print(f"{name}, torch {torch.__version__}: copy {copy:.0f} GB/s read, pinned host→device {h2d:.1f} GB/s",
          flush=True)
    print(f"{'size':5s} {'sources':8s} {'method':17s} {'first s':>8s} {'seconds':>8s} {'GB/s':>7s} {'% copy':>7s}")
    for size in args.sizes.split(","):
        for place in args.places.split(","):
            models = family(size, device, place)
            model_bytes = sum(t.numel() * t.element_size() for t in models["base"].values())
            merger = Merger(models, base="base", device=device, offload=place == "host", check_finite=False)
            for method in args.methods.split(","):
                try:
                    first = timed_merge(merger, method, device)
                    seconds = min(timed_merge(merger, method, device) for _ in range(2))
                except torch.OutOfMemoryError as err:
                    print(f"{size:5s} {place:8s} {method:17s} out of memory: {str(err).splitlines()[0]}", flush=True)
                    torch.cuda.empty_cache()
                    continue
                gbs = 4 * model_bytes / seconds / 1e9
                bound = copy if place == "gpu" else h2d
                print(f"{size:5s} {place:8s} {method:17s} {first:8.2f} {seconds:8.2f} {gbs:7.1f} "
                      f"{100 * gbs / bound:6.0f}%{'' if place == 'gpu' else ' of h2d'}", flush=True)
            del merger, models
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
