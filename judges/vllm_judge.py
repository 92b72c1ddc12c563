"""`vllm` backend: a judge model run by a vLLM engine inside the cluster.

For judges too large or too private for an API (Llama-3.1-70B-class, several GPUs with
`tensor_parallel_size`), or to judge offline on a CPU machine with a small model. The
pairwise logic (orders, parsing, bounded re-asks, both-orders rule) is the same as the
openai backend's; only `complete` differs: item threads submit their prompts to a
`MicroBatcher` that feeds the engine whole batches. With `guided_json` (default) the
engine decodes under the verdict JSON schema, so even a weak judge's replies parse.
An engine error fails the items of that batch as counted failures, never a score.
"""

from __future__ import annotations

from collections.abc import Sequence

from judges.base import register_judge
from judges.batching import MicroBatcher
from judges.config import VLLMJudgeConfig
from judges.pairwise import JudgeTransportError, item_order, judge_items
from judges.prompt import Message, verdict_schema
from judges.rubric import DEFAULT_RUBRIC, Rubric
from judges.verdicts import JudgeItem, Order, Verdict
from runtime import configure_cpu_environment, resolve_dtype, vllm_on_cpu


Prompt = tuple[list[Message], tuple[str, ...]]  # messages, dimensions the verdict must hold


class VLLMJudge:
    def __init__(self, config: VLLMJudgeConfig, rubric: Rubric = DEFAULT_RUBRIC) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise RuntimeError("the vllm judge needs vLLM: `bash setup.sh --vllm` on CPU machines, "
                               "`pip install vllm` on GPU machines") from err

        self.config = config
        self.rubric = rubric
        orders = "both" if config.both_orders else f"random(seed={config.seed})"
        self.identity = f"vllm:{config.model}:orders={orders}" + (":guided" if config.guided_json else "")
        on_cpu = vllm_on_cpu()
        kwargs: dict = dict(model=config.model, dtype=resolve_dtype(config.dtype, on_cpu, vllm=True), seed=0,
                            max_model_len=config.max_model_len, tensor_parallel_size=config.tensor_parallel_size,
                            enforce_eager=True, trust_remote_code=config.trust_remote_code)
        if config.distributed_executor_backend:
            kwargs["distributed_executor_backend"] = config.distributed_executor_backend
        if on_cpu:
            configure_cpu_environment(config.cpu_kv_cache_gib)
        else:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        self.llm = LLM(**kwargs)
        self._batcher: MicroBatcher[Prompt, str] = MicroBatcher(self._generate, max_batch=config.batch_size)

    def __repr__(self) -> str:
        return f"VLLMJudge(model={self.config.model!r}, tensor_parallel_size={self.config.tensor_parallel_size})"

    def order_for(self, item: JudgeItem) -> Order:
        return item_order(item, both_orders=self.config.both_orders, seed=self.config.seed)

    def _generate(self, prompts: Sequence[Prompt]) -> list[str]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [SamplingParams(temperature=0.0, max_tokens=self.config.max_tokens, seed=self.config.seed,
                                 structured_outputs=StructuredOutputsParams(json=verdict_schema(dims))
                                 if self.config.guided_json else None)
                  for _, dims in prompts]
        outputs = self.llm.chat([messages for messages, _ in prompts], params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def complete(self, messages: list[Message], dimensions: tuple[str, ...]) -> tuple[str | None, int]:
        try:
            return self._batcher.submit((messages, dimensions)), 1
        except Exception as err:  # noqa: BLE001  (the engine failed this batch)
            raise JudgeTransportError(f"vLLM judge engine error: {type(err).__name__}: {str(err)[:200]}", 1) from None

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        c = self.config
        return judge_items(items, self.complete, self.rubric, judge_name=self.identity, both_orders=c.both_orders,
                           seed=c.seed, parse_retries=c.parse_retries, workers=self.config.batch_size,
                           thread_prefix="vllm-judge")

    def close(self) -> None:
        self._batcher.close()
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def _factory(config: object, rubric: Rubric) -> VLLMJudge:
    if not isinstance(config, VLLMJudgeConfig):
        raise TypeError(f"vllm judge needs a VLLMJudgeConfig, got {type(config).__name__}")
    return VLLMJudge(config, rubric)


register_judge("vllm", _factory)
