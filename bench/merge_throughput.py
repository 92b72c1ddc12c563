#!/usr/bin/env python
"""Merge throughput of every method vs. this machine's memory bandwidth (and vs. mergekit).

Three random Llama-shaped bf16 models (~0.94 GB each: hidden 1024, MLP 4096, 24 layers,
vocab 32000) are held in memory; each method merges base + 2 sources and we print the
first merge's seconds (it includes torch.compile's work for that method, once per
process), then the steady state (best of three: the search merges over and over) and its
GB/s of source bytes read, next to the bandwidth of a plain large tensor copy measured just
before that method (bytes read per second, so the ratio compares like with like; this
kind of shared VM varies 12-27 GB/s from minute to minute). With mergekit importable, its
in-memory `merge_state_dicts` runs the same merge, timed the same way (best of three
after a first run, unless the first takes over 10 s).

"roof s" is what one pass reading the inputs and writing the output would take at the
copy's rate (a copy moves two bytes per byte read), and "roof x" mergekit's time over it:
the largest speed-up over mergekit this machine's memory allows any implementation. The
last column checks issue 17's CPU targets: ≥ 40 % of copy for linear/task_arithmetic,
≥ 10 % for ties/dare_ties/della, ≥ 10x mergekit for the task-vector methods, ≥ 2x for the
SLERP family. SOUPSEARCH_COMPILE=0 measures the eager path.

    .venv/bin/python bench/merge_throughput.py [--device cuda] [--methods ties,linear] [--no-mergekit] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import time

import torch

from merging import Merger, method_names, parse_plan, pick_device
from merging.compile import compiler_missing, mode as compile_mode

PARAMS = {  # (per-model params, shared params) for a representative merge of each method
    "linear": ({"weight": 0.5}, {}), "task_arithmetic": ({"weight": 0.5}, {}), "slerp": ({}, {"t": 0.5}),
    "alignment_slerp": ({}, {"t": 0.5}), "nuslerp": ({"weight": 0.5}, {}), "multislerp": ({"weight": 0.5}, {}),
    "ties": ({"weight": 0.5, "density": 0.3}, {}), "dare_linear": ({"weight": 0.5, "density": 0.3}, {}),
    "dare_ties": ({"weight": 0.5, "density": 0.3}, {}), "della": ({"weight": 0.5, "density": 0.3}, {}),
    "della_linear": ({"weight": 0.5, "density": 0.3}, {}), "breadcrumbs": ({"weight": 0.5, "density": 0.3}, {}),
    "breadcrumbs_ties": ({"weight": 0.5, "density": 0.3}, {}), "model_stock": ({}, {}), "karcher": ({}, {}),
    "tsvm": ({"weight": 1.0}, {}), "r_tsvm": ({"weight": 1.0}, {}),
}
BASE_IN_INPUTS = {"linear", "karcher"}  # methods whose inputs are all listed models
# Issue 17's CPU targets: (minimum % of copy bandwidth, minimum speed-up over mergekit)
MEMORY_BOUND = {"linear", "task_arithmetic"}
SPARSE_BANDWIDTH = {"ties", "dare_ties", "della"}
TASK_VECTOR = {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "della", "della_linear",
               "breadcrumbs", "breadcrumbs_ties"}
SLERP_FAMILY = {"slerp", "nuslerp", "multislerp"}


def targets(method: str) -> tuple[float | None, float | None]:
    copy_pct = 40.0 if method in MEMORY_BOUND else 10.0 if method in SPARSE_BANDWIDTH else None
    speedup = 10.0 if method in TASK_VECTOR else 2.0 if method in SLERP_FAMILY else None
    return copy_pct, speedup


def verdict(method: str, pct: float, speedup: float | None, roof_x: float | None) -> str:
    """✓/✗ per target of this method ('' when it has none); a speed-up target above what the
    memory roof allows says so."""
    want_pct, want_x = targets(method)
    parts = []
    if want_pct is not None:
        parts.append(f"{'✓' if pct >= want_pct else '✗'} ≥{want_pct:.0f}% copy")
    if want_x is not None and speedup is not None:
        mark = "✓" if speedup >= want_x else "✗"
        roof = f" (roof {roof_x:.1f}x)" if mark == "✗" and roof_x is not None and roof_x < want_x else ""
        parts.append(f"{mark} ≥{want_x:.0f}x mergekit{roof}")
    return "; ".join(parts)


def llama_state(seed: int, scale: float, device: torch.device, base: dict | None = None) -> dict[str, torch.Tensor]:
    hidden, inter, layers, vocab = int(1024 * scale) or 64, int(4096 * scale) or 256, 24, 32000
    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}self_attn.{proj}_proj.weight"] = (hidden, hidden)
        shapes |= {f"{p}mlp.gate_proj.weight": (inter, hidden), f"{p}mlp.up_proj.weight": (inter, hidden),
                   f"{p}mlp.down_proj.weight": (hidden, inter), f"{p}input_layernorm.weight": (hidden,),
                   f"{p}post_attention_layernorm.weight": (hidden,)}
    state = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
        if base is not None:  # a fine-tune: base + a small delta
            t = base[name].float().cpu() + 0.1 * t
        state[name] = t.to(torch.bfloat16).to(device)
    return state


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """GB/s of bytes read by a plain copy of a large bf16 tensor (best of 3)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_for(method: str) -> dict:
    model_params, shared = PARAMS.get(method, ({}, {}))
    if method == "slerp":
        models = [{"model": "a", "parameters": dict(model_params)}]
    else:
        models = [{"model": m, "parameters": dict(model_params)} for m in ("a", "b")]
    if method in BASE_IN_INPUTS:
        models.insert(0, {"model": "base", "parameters": dict(model_params)})
    plan = {"merge_method": method, "models": models, "parameters": shared, "dtype": "bfloat16"}
    if method != "karcher":
        plan["base_model"] = "base"
    return plan


def time_ours(merger: Merger, plan_dict: dict, device: torch.device) -> float:
    plan = parse_plan(plan_dict, plan_dict["merge_method"])
    _sync(device)
    t0 = time.perf_counter()
    for _name, _tensor in merger.merge(plan):
        pass  # tensors are produced and dropped, as when pushed into a serving engine
    _sync(device)
    return time.perf_counter() - t0


def time_mergekit(states: dict[str, dict], plan_dict: dict) -> float | None:
    try:
        from mergekit.merge_methods import get as mk_get
        from mergekit.merge_methods.api import merge_state_dicts
    except ImportError:
        return None
    method = plan_dict["merge_method"]
    try:
        mk_get(method)
    except RuntimeError:
        return None
    keys = [m["model"] for m in plan_dict["models"]]
    if plan_dict.get("base_model") and plan_dict["base_model"] not in keys:
        keys = [plan_dict["base_model"]] + keys
    models = {k: states[k] for k in keys}
    params = dict(plan_dict["parameters"])
    for p in ("weight", "density"):
        values = {m["model"]: m["parameters"][p] for m in plan_dict["models"] if p in m["parameters"]}
        if values:
            if plan_dict.get("base_model") in keys and plan_dict["base_model"] not in values:
                values[plan_dict["base_model"]] = values[next(iter(values))]
            params[p] = values
    def once() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            merge_state_dicts(models, method, parameters=params, base=plan_dict.get("base_model"),
                              dtype=torch.bfloat16)
        return time.perf_counter() - t0

    first = once()
    return first if first > 10 else min([first] + [once() for _ in range(2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default=",".join(method_names()))
    parser.add_argument("--no-mergekit", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0, help="hidden/MLP size scale (1.0 ≈ 0.94 GB per model)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; building models…", flush=True)
    base = llama_state(0, args.scale, device)
    states = {"base": base, "a": llama_state(1, args.scale, device, base), "b": llama_state(2, args.scale, device, base)}
    model_bytes = sum(t.numel() * t.element_size() for t in base.values())
    merger = Merger(states, base="base", device=device, check_finite=True)
    missing = compiler_missing(device.type)
    print(f"SOUPSEARCH_COMPILE={compile_mode()}" + (f" (no compiled kernels: {missing})" if missing else ""))
    copy_bytes = min(model_bytes, 1 << 30)
    print(f"model size {model_bytes / 1e9:.2f} GB bf16; plain copy bandwidth {copy_bandwidth(device, copy_bytes):.2f} "
          "GB/s (bytes read), measured again before each method")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    header = (f"{'method':18s} {'first s':>8s} {'seconds':>8s} {'GB/s':>7s} {'copy':>6s} {'% copy':>7s} "
              f"{'mergekit s':>11s} {'speed-up':>9s} {'roof s':>7s} {'roof x':>7s}  target")
    print(header)
    print("-" * len(header))
    for method in args.methods.split(","):
        plan = plan_for(method)
        n_read = len({m["model"] for m in plan["models"]} | ({plan["base_model"]} if plan.get("base_model") else set()))
        copy_gbs = copy_bandwidth(device, copy_bytes)
        # A search merges over and over: report the steady state (best of three runs after
        # the first: this machine is shared, and single runs vary by ±30%), unless one run
        # is so long that warm-up does not matter.
        first = time_ours(merger, plan, device)
        seconds = first if first > 30 else min(time_ours(merger, plan, device) for _ in range(3))
        gbs = n_read * model_bytes / seconds / 1e9
        roof = (n_read + 1) * model_bytes / (2 * copy_gbs * 1e9)
        theirs = None if args.no_mergekit or device.type != "cpu" else time_mergekit(states, plan)
        mk = (f"{theirs:11.2f} {theirs / seconds:8.1f}x {roof:7.3f} {theirs / roof:6.1f}x" if theirs
              else f"{'-':>11s} {'-':>9s} {roof:7.3f} {'-':>7s}")
        pct = 100 * gbs / copy_gbs
        note = verdict(method, pct, theirs / seconds if theirs else None, theirs / roof if theirs else None)
        print(f"{method:18s} {first:8.2f} {seconds:8.2f} {gbs:7.2f} {copy_gbs:6.1f} {pct:6.0f}% {mk}  {note}",
              flush=True)


if __name__ == "__main__":
    main()
