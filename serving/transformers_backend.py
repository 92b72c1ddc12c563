"""In-process transformers engine: the pure-PyTorch fallback when vLLM is absent.

The model is built once from the base folder; a swap copies merged tensors into its
parameters in place (tied embeddings share storage, so the head follows). Generation is
batched greedy decoding over the chat template with left padding (batch size is part
of the settings: padding changes float rounding, so keep it fixed across a search).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from merging import MergePlan
from runtime import resolve_dtype
from serving.base import (BROKEN, Conversation, EngineSettings, GenerationSettings, ModelSet, ServingBackend, ServingError,
                          SwapTiming, check_answers, plan_label, register_backend, timed)
from serving.weights import TimedIterator, WeightSource

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@register_backend("transformers")
class TransformersBackend(ServingBackend):
    def __init__(self, model_set: ModelSet, engine: EngineSettings | None = None):
        super().__init__(model_set, engine)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from merging import pick_device

        if self.engine.threads:
            torch.set_num_threads(self.engine.threads)
        self.device = pick_device(self.engine.device)
        dtype = _DTYPES.get(resolve_dtype(self.engine.dtype, self.device.type == "cpu"), torch.bfloat16)
        base_dir = model_set.base_dir
        remote_code = model_set.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype,
                                                          trust_remote_code=remote_code).to(self.device).eval()
        self.params = dict(self.model.named_parameters(remove_duplicate=False))
        self.weights = WeightSource({k: str(v) for k, v in model_set.models.items()}, model_set.base, self.device,
                                    allow_pickle=model_set.allow_pickle, sources=model_set.sources,
                                    stage=self.engine.stage_merges)

    def _load(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        count = 0
        with torch.no_grad():
            for name, tensor in tensors:
                param = self.params.get(name)
                if param is None:
                    raise ServingError(f"merged tensor {name} has no parameter in the {self.model_set.base} model")
                if param.shape != tensor.shape:
                    raise ServingError(f"merged tensor {name}: shape {tuple(tensor.shape)} != model's {tuple(param.shape)}")
                param.copy_(tensor)
                count += 1
        return count

    def _swap_in(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple[int, float]:
        """Copy `tensors` into the model; one that fails after the first copy leaves a mix of two
        models, so the engine is marked broken until a whole model is loaded again."""
        try:
            return timed(lambda: self._load(tensors))
        except Exception as err:
            self.current = BROKEN
            raise ServingError(f"loading the weights failed half-way, the engine is broken: "
                               f"{type(err).__name__}: {err}") from err

    def apply_plan(self, plan: MergePlan) -> SwapTiming:
        tensors, merge_s = self.weights.plan_tensors(plan, stage=self.engine.stage_merges)
        count, load_s = self._swap_in(tensors)
        if isinstance(tensors, TimedIterator):  # streamed: merging happened inside the load
            merge_s, load_s = tensors.seconds, load_s - tensors.seconds
        self.current = plan_label(plan)
        return SwapTiming(merge_s=merge_s, load_s=load_s, tensors=count)

    def use_model(self, key: str) -> SwapTiming:
        if key not in self.model_set.models:
            raise ServingError(f"model {key!r} is not held (held: {sorted(self.model_set.models)})")
        count, load_s = self._swap_in(self.weights.model_tensors(key))
        self.current = key
        return SwapTiming(merge_s=0.0, load_s=load_s, tensors=count)

    @torch.no_grad()
    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings | None = None) -> list[str]:
        settings = settings or GenerationSettings()
        if self.broken:
            raise ServingError("the engine holds a half-loaded merge; apply a plan or a model first")
        torch.manual_seed(settings.seed)
        answers: list[str] = []
        for start in range(0, len(conversations), settings.batch_size):
            batch = [list(c) for c in conversations[start:start + settings.batch_size]]
            texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in batch]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            out = self.model.generate(**enc, max_new_tokens=settings.max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return check_answers(answers, len(conversations))

    def close(self) -> None:
        self.weights.close()
        self.model = None
