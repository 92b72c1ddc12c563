"""Code that runs inside vLLM's worker process, next to the model's weights.

vLLM's supported hook for this is `LLM(..., worker_extension_cls="serving.vllm_worker.
SoupWorkerExtension")`: the class is mixed into the worker, and `llm.collective_rpc(
"soup_...")` calls its methods there. Tensors cannot cross that RPC, so the base and
sources are loaded once *in the worker* (a resident `Merger`), plans cross as plain dicts,
and the merged tensors go straight into `reload_weights(weights_iterator=...)`, vLLM's
in-place reload, which re-runs the model's own weight loading (fused qkv, CPU repacking).
Every method returns plain data (timings, counts) so results cross back as well.

One repair is needed after every reload on CPU: vLLM-CPU packs each linear layer's weight
into a GEMM handle when the layer's weights are processed. The in-place reload re-runs
that for every layer that received weights, but a tied LM head receives none (its
weight *is* the embedding), so its handle kept the previous model's embedding: logits
came from the old head while the rest of the network was new (caught by comparing a
swapped engine with one started on the same folder). `_refresh_unloaded_heads` re-packs
embedding-shaped layers from their current weights.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from serving.weights import TimedIterator, WeightSource


class SoupWorkerExtension:
    """Mixed into vLLM's Worker: `self.reload_weights` and `self.device` come from it."""

    _soup: WeightSource | None = None
    _soup_threads: int | None = None

    def soup_open(self, models: dict[str, str], base: str, merge_threads: int | None = None,
                  allow_pickle: bool = False, sources: str = "auto", stage: bool = True) -> dict[str, Any]:
        started = time.perf_counter()
        device = getattr(self, "device", "cpu")
        self._soup_threads = merge_threads
        with self._merge_threads():
            self._soup = WeightSource(models, base, device=device, allow_pickle=allow_pickle, sources=sources,
                                      stage=stage)
        return {"load_s": time.perf_counter() - started, "tensors": len(self._soup.merger.names),
                "bytes": self._soup.merger.source_bytes(), "device": str(device), "sources": self._soup.sources}

    def soup_apply(self, plan: dict[str, Any], stage: bool = True) -> dict[str, Any]:
        with self._merge_threads():
            tensors, merge_s = self._held().plan_tensors(plan, stage=stage)
            started = time.perf_counter()
            try:
                self.reload_weights(weights_iterator=tensors)
                self._refresh_unloaded_heads()
            except Exception as err:  # noqa: BLE001  (data, not an exception: the caller must tell
                # a failed merge, which left the weights alone, from a reload that stopped half-way)
                if not stage:
                    raise
                return {"reload_error": f"{type(err).__name__}: {err}"}
        load_s = time.perf_counter() - started
        if isinstance(tensors, TimedIterator):
            merge_s, load_s = tensors.seconds, load_s - tensors.seconds
        return {"merge_s": merge_s, "load_s": load_s, "tensors": len(self._held().merger.names)}

    def soup_use_model(self, key: str) -> dict[str, Any]:
        source = self._held()
        if key not in source.merger.folders:
            raise KeyError(f"model {key!r} is not held (held: {sorted(source.merger.folders)})")
        started = time.perf_counter()
        self.reload_weights(weights_iterator=source.model_tensors(key))
        self._refresh_unloaded_heads()
        return {"merge_s": 0.0, "load_s": time.perf_counter() - started, "tensors": len(source.merger.names)}

    def soup_close(self) -> None:
        if self._soup is not None:
            self._soup.close()
            self._soup = None

    def _refresh_unloaded_heads(self) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return  # GPU kernels read the parameter itself; nothing is packed aside
        for module in self.model_runner.get_model().modules():
            if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
                module.quant_method.process_weights_after_loading(module)

    @contextmanager
    def _merge_threads(self) -> Iterator[None]:
        """vLLM pins torch to 1 intra-op thread for serving on CPU; merges may use more."""
        if not self._soup_threads or self._soup_threads == torch.get_num_threads():
            yield
            return
        serving_threads = torch.get_num_threads()
        torch.set_num_threads(self._soup_threads)
        try:
            yield
        finally:
            torch.set_num_threads(serving_threads)

    def _held(self) -> WeightSource:
        if self._soup is None:
            raise RuntimeError("soup_open was not called in this worker")
        return self._soup
