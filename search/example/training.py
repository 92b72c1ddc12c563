"""Short, real preference optimisation of the example base with TRL: the DPO, KTO and ORPO variants.

The heterogeneous-soups study merges DPO/KTO/ORPO variants of one SFT model; this module
makes a miniature of that family on CPU in a few minutes. Each method trains the full
model (no adapters, so the variant is a plain checkpoint with the base's tensor names) in
float32 towards its own answer style (`search.example.preferences.SLANTS`) and the result
is written as a bf16 safetensors folder with the base's config and tokenizer files, plus
``soupsearch_variant.json`` recording how it was made.

Hyper-parameters are deliberately aggressive (learning rates of 1e-5 to 5e-5, tens of
steps): 10 steps at 1e-5 barely changed greedy answers (STACK-NOTES), and the point of the
example is a family whose members behave visibly differently. Seeds are fixed; CPU torch
with a fixed thread count is deterministic in practice, but this is not guaranteed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from merging.checkpoint import ModelFolder
from merging.writer import write_model
from runtime import cpu_has_native_bf16
from search.example.preferences import SLANTS, PreferenceSet, kto_rows, paired_rows

__all__ = ["DEFAULT_SETTINGS", "METHODS", "METADATA_FILE", "TrainingSettings", "build_trainer", "read_metadata",
           "train_variant"]

METHODS: tuple[str, ...] = ("dpo", "kto", "orpo")
METADATA_FILE = "soupsearch_variant.json"


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that decides a variant's weights (recorded in its metadata and compared for caching)."""

    method: str
    steps: int
    learning_rate: float
    beta: float
    batch_size: int = 4
    max_length: int = 160
    warmup_steps: int = 2
    #: seed and data_seed of the run; for KTO, which TRL reads in order, a non-zero seed also shuffles the rows
    seed: int = 0
    #: KTO only: weight of desirable examples, and which styles are undesirable (comma-separated;
    #: empty: all other styles). With both short styles undesirable, KTO learned "answer at
    #: length" instead of the follow-up offer, so the example uses the cautious style only.
    desirable_weight: float = 1.0
    kto_undesirable: str = ""
    #: DPO only: weight of an NLL term on the chosen answer next to the sigmoid loss (RPO-style).
    #: Pure DPO drove its loss to ~0 on the training pairs by pushing rejected answers down while
    #: held-out answers kept their length; the NLL term makes the terse style carry over.
    sft_weight: float = 0.0
    #: "bf16": float32 weights with bf16 autocast (TRL/accelerate mixed precision), ~1.9x faster
    #: on CPUs with native bf16 (AVX512_BF16/AMX), emulated and slower elsewhere; "fp32" otherwise.
    #: Part of the cache identity: a variant trained one way is not silently reused for the other.
    mixed_precision: str = "fp32"

    def with_steps(self, steps: int) -> "TrainingSettings":
        return replace(self, steps=steps, warmup_steps=min(self.warmup_steps, max(steps - 1, 0)))


#: bf16 autocast where the CPU computes bf16 natively (~1.9x faster there), float32 elsewhere.
_PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
DEFAULT_SETTINGS: dict[str, TrainingSettings] = {
    "dpo": TrainingSettings("dpo", steps=20, learning_rate=5e-5, beta=0.1, sft_weight=1.0, mixed_precision=_PRECISION),
    # 20 KTO steps left 1 answer in 12 with a follow-up offer (held-out, greedy): proactivity then
    # separated nothing; 40 steps give the offer on every answer, at about half the length.
    "kto": TrainingSettings("kto", steps=40, learning_rate=1e-4, beta=0.1, kto_undesirable="cautious",
                            mixed_precision=_PRECISION),
    "orpo": TrainingSettings("orpo", steps=20, learning_rate=1e-4, beta=0.1, mixed_precision=_PRECISION),
}


def _common_args(settings: TrainingSettings, output_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=output_dir, max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="linear", warmup_steps=settings.warmup_steps,
        beta=settings.beta, max_length=settings.max_length, seed=settings.seed, data_seed=settings.seed,
        use_cpu=True, bf16=settings.mixed_precision == "bf16", fp16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True)


def build_trainer(model: torch.nn.Module, tokenizer: Any, settings: TrainingSettings, prefs: PreferenceSet,
                  output_dir: str) -> tuple[Any, int]:
    """The TRL trainer for `settings.method` and the number of training examples it sees.

    Public, beside `train_variant`, because what decides a variant's weights is fixed here
    (data view, order, loss, arguments) before any step runs: a trainer's first batch shows
    whether a seed changes the data a method sees without training it."""
    from datasets import Dataset

    slant = SLANTS[settings.method]
    args = _common_args(settings, output_dir)
    if settings.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        rows = paired_rows(prefs.rows, slant)
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, settings.sft_weight]} \
            if settings.sft_weight else {"loss_type": ["sigmoid"]}
        trainer = DPOTrainer(model=model, args=DPOConfig(**args, **losses), train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
    elif settings.method == "kto":
        from trl import KTOConfig, KTOTrainer

        undesirable = [s for s in settings.kto_undesirable.split(",") if s] or None
        rows = kto_rows(prefs.rows, slant, undesirable, seed=settings.seed)
        trainer = KTOTrainer(model=model, args=KTOConfig(**args, desirable_weight=settings.desirable_weight),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    elif settings.method == "orpo":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRLExperimentalWarning: ORPO moved to trl.experimental
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        rows = paired_rows(prefs.rows, slant)
        trainer = ORPOTrainer(model=model, args=ORPOConfig(**args, remove_unused_columns=False),
                              train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer)
    else:
        raise ValueError(f"unknown preference-optimisation method {settings.method!r}; expected one of {METHODS}")
    return trainer, len(rows)


def train_variant(base_dir: Path, out_dir: Path, settings: TrainingSettings, prefs: PreferenceSet,
                  *, on_log: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train one variant of the model in `base_dir`, write it to `out_dir`; return its metadata."""
    import transformers
    import trl
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback

    losses: list[float] = []
    bar = tqdm(total=settings.steps, desc=f"training {settings.method}", unit="step", leave=False)

    class _Losses(TrainerCallback):
        """Keeps the loss curve and shows one progress bar, instead of the trainer's per-step
        log dictionaries, which buried the console of a first run."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TRL's signature
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if on_log:
                    on_log(logs)

    started, load = time.perf_counter(), os.getloadavg()[0]
    transformers.set_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory(prefix="soupsearch-trl-") as scratch:
        trainer, n_examples = build_trainer(model, tokenizer, settings, prefs, scratch)
        for quiet in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(quiet)
        trainer.add_callback(_Losses())
        try:
            trainer.train()
        finally:
            bar.close()
    trained = trainer.model
    seconds = time.perf_counter() - started
    metadata = {
        "method": settings.method, "slant": SLANTS[settings.method], "hyperparameters": asdict(settings),
        "seed": settings.seed, "steps": settings.steps, "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None, "losses": [round(x, 5) for x in losses],
        "data": {"file": prefs.path.name, "sha256": prefs.sha256, "rows": len(prefs), "examples": n_examples},
        "wall_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
        "load_average_at_start": round(load, 2),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }
    state = trained.state_dict()
    with ModelFolder(base_dir) as base:
        names = base.tensor_names()  # the base's names only: tied lm_head is not stored
        missing = [n for n in names if n not in state]
        if missing:
            raise RuntimeError(f"trained {settings.method} model lacks base tensors, e.g. {missing[:3]}")
        tensors = ((n, state[n].detach().to(base.dtype(n))) for n in names)
        write_model(tensors, out_dir, base_dir=base_dir, force=True,
                    extra_files={METADATA_FILE: json.dumps(metadata, indent=2) + "\n"})
    return metadata


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """A variant folder's metadata, or None when the folder is missing or incomplete."""
    path = folder / METADATA_FILE
    if not (folder / "config.json").exists() or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
