"""The experiment config: models, search space, sampler, workers, serving, judge, eval set.

Validated with pydantic when loaded, before any model is touched: an error names the
field (`space.density: ...`), so a typo costs seconds, not a cluster hour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from judges.config import JudgingConfig
from judges.rubric import DEFAULT_RUBRIC
from merging import method_names, read_yaml
from merging.plan import validate_mapping
from serving.base import EngineSettings, GenerationSettings

ROOT = Path(__file__).resolve().parent.parent
DIMENSIONS = DEFAULT_RUBRIC.names  # the judged dimensions: judges/rubric.py is their one source
MODULES = ("attn", "mlp", "norm", "embed", "lm_head")


class SearchConfigError(ValueError):
    """The config is invalid; the message names every bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelsConfig(_Strict):
    """`example: true` uses the bundled family from `run_search.py prepare-example`."""

    example: bool = False
    base: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)
    allow_pickle: bool = Field(False, description="load .bin/.pt checkpoints (unpickling can run code: only for "
                                                  "models you trust; safetensors need nothing)")
    trust_remote_code: bool = Field(False, description="run the model repository's own Python code (custom "
                                                       "architectures); off unless you trust the repository")

    @model_validator(mode="after")
    def _complete(self) -> "ModelsConfig":
        if self.example:
            if self.base or self.sources:
                raise ValueError("give either example: true or base + sources, not both")
            return self
        if not self.base:
            raise ValueError("base: the base (SFT) model folder is required (or example: true)")
        if len(self.sources) < 2:
            raise ValueError(f"sources: at least 2 fine-tuned models are needed, got {len(self.sources)}")
        if "base" in self.sources:
            raise ValueError("sources: 'base' is reserved for the base model; rename that source")
        return self


class Range(_Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must be ≤ high ({self.high})")
        return self


class LayerCurve(_Strict):
    """A multiplier across depth: `knots` values interpolated over the layers
    (mergekit gradient semantics), or one free value per layer with `per_layer`."""

    knots: int = Field(3, ge=2, le=64)
    per_layer: bool = False
    range: Range = Field(default_factory=lambda: Range(low=0.5, high=1.5))


class ModuleMultipliers(_Strict):
    modules: list[Literal["attn", "mlp", "norm", "embed", "lm_head"]] = Field(default_factory=lambda: ["attn", "mlp"])
    range: Range = Field(default_factory=lambda: Range(low=0.5, high=1.5))


class SpaceConfig(_Strict):
    methods: list[str] = Field(default_factory=lambda: ["linear", "task_arithmetic", "ties", "dare_ties",
                                                        "alignment_slerp", "tsvm"], min_length=1)
    weights: Literal["simplex", "equal"] = "simplex"
    scale: Range = Field(default_factory=lambda: Range(low=0.5, high=1.5),
                         description="λ of task-vector methods (task arithmetic's scaling)")
    density: Range = Field(default_factory=lambda: Range(low=0.1, high=1.0))
    t: Range = Field(default_factory=lambda: Range(low=0.0, high=1.0), description="SLERP position")
    layer_curve: LayerCurve | None = None
    module_multipliers: ModuleMultipliers | None = None
    grid_lambdas: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                      description="λ values of the grid sampler (the heterogeneous-soups grid)")

    @field_validator("methods")
    @classmethod
    def _known(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown merge method(s) {unknown}; known: {', '.join(method_names())}")
        return methods


class RacingConfig(_Strict):
    """`search.racing`: trials answered and judged in two rounds of items, stopped after the
    first when even their optimistic scores cannot reach the front (search/racing.py)."""

    enabled: bool | Literal["auto"] = Field(
        "auto", description="true, false, or auto: on when search.n_trials >= auto_trials (a short search has "
                            "too few finished trials to compare with) and the search items >= auto_items")
    first_round: float = Field(0.25, gt=0, lt=1, description="share of the search items (per category, seeded "
                                                              "with search.seed, the same for every trial) "
                                                              "judged before a trial may be stopped")
    auto_trials: int = Field(40, ge=1, description="with enabled: auto, the budget from which racing is on")
    auto_items: int = Field(200, ge=1, description="with enabled: auto, the search items from which racing is on "
                                                   "(below, one generation batch answers them all and a second round "
                                                   "costs nearly as much as it saves)")

    @field_validator("enabled", mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f"must be true, false or auto, got {value!r}")


class SearchSettings(_Strict):
    strategy: Literal["optuna", "uniform_soup", "greedy_soup"] = Field(
        "optuna", description="optuna: the multi-objective search; uniform_soup / greedy_soup: the model-soups "
                              "baselines (Wortsman et al.) on the same evaluation")
    sampler: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    n_trials: int = Field(24, ge=1)
    seed: int = 0
    merge_seed: int = Field(0, ge=0, description="seed of the drop masks of randomised merge methods (DARE, "
                                                 "DELLA), fixed for the whole search and written into each "
                                                 "plan: a searched seed would reward lucky masks, not merges")
    population: int | None = Field(None, ge=2, description="NSGA-II population (trials per generation); None: "
                                                           "derived from n_trials so the budget spans several "
                                                           "generations (search.samplers.nsga2_population)")
    objectives: list[str] = Field(default_factory=lambda: ["safety", "factuality", "conciseness", "proactivity"],
                                  min_length=1)
    constraints: list[str] = Field(default_factory=list,
                                   description='e.g. "safety>=best_source" or "factuality>=0.5" (an objective or '
                                               'a judge dimension); TPE and NSGA-II are told every trial\'s '
                                               'violation, and violating trials stay in the results but not on '
                                               'the front')
    trial_retries: int = Field(1, ge=0, le=5, description="re-runs of a trial whose worker died")
    racing: RacingConfig = Field(default_factory=RacingConfig,
                                 description="racing on items: stop a trial after a first round of items when "
                                             "its optimistic scores are dominated by the front")

    @field_validator("objectives")
    @classmethod
    def _dims(cls, objectives: list[str]) -> list[str]:
        """Each objective is a judge dimension, a built-in answer metric, or a user function
        'pkg.mod:fn' (imported and its signature checked now, so a typo costs seconds)."""
        from judges.answer_metrics import METRICS, ObjectiveError, is_user_function, load_user_function

        bad = [o for o in objectives if o not in DIMENSIONS and o not in METRICS and not is_user_function(o)]
        if bad:
            raise ValueError(f"unknown objective(s) {bad}; an objective is a judge dimension "
                             f"({', '.join(DIMENSIONS)}), a built-in metric ({', '.join(METRICS)}) "
                             f"or a function 'package.module:function'")
        reasons = []
        for o in objectives:
            if is_user_function(o):
                try:
                    load_user_function(o)
                except ObjectiveError as err:
                    reasons.append(str(err))
        if reasons:
            raise ValueError("; ".join(reasons))
        return objectives


class WorkersConfig(_Strict):
    count: int = Field(1, ge=1)
    cpus: float = Field(2, gt=0, description="CPUs per merge worker")
    gpus: float = Field(0, ge=0, description="GPUs per merge worker (a fraction shares one GPU)")
    judges: int = Field(1, ge=1, description="judge actors")
    judge_gpus: float = Field(0, ge=0, description="GPUs per judge actor: a `vllm` judge with the default executor "
                                                   "needs its tensor_parallel_size here; 0 for an API judge, or with "
                                                   "distributed_executor_backend: ray (vLLM places its own workers)")
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per merge worker, e.g. {merge_slot: 1} with "
                                          "`ray start --resources '{\"merge_slot\": 1}'` on each node: one worker per node")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts a merge worker whose process died (OOM, lost "
                                                   "node, kill); a restart reloads the sources, the trial is retried")

    restart_timeout_s: float = Field(900, gt=0, description="how long a trial waits for a restarted worker to load "
                                                            "its models again before it gives up on it")
    trials_ahead: int | None = Field(
        None, ge=0, description="trials that may run beyond one per worker: a trial holds its worker only to merge, "
                                "swap and generate, so while its answers are judged the worker takes the next one. "
                                "Default: workers.judges for a judge model or API, 0 for the rubric judge (judging "
                                "takes milliseconds, nothing to overlap)")
    sources: Literal["auto", "gpu", "host", "disk"] = Field(
        "auto", description="where each worker keeps base and sources: gpu (the merge device), host (pinned host "
                            "memory, copied per tensor), disk (memory-mapped safetensors, page cache shared by "
                            "co-located workers); auto: the fastest that fits next to the engine")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="memory of one worker GPU, for the memory preflight when the driver has no GPU "
                                "to read it from")

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, resources: dict[str, float]) -> dict[str, float]:
        reserved = sorted(set(resources) & {"CPU", "GPU", "memory", "object_store_memory"})
        if reserved:
            raise ValueError(f"{reserved} are set by workers.cpus / workers.gpus, not workers.resources")
        negative = sorted(k for k, v in resources.items() if not v > 0)
        if negative:
            raise ValueError(f"resource amounts must be > 0: {negative}")
        return resources


class ServingConfig(_Strict):
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    engine: EngineSettings = Field(default_factory=EngineSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)


class EvalConfig(_Strict):
    set: str = Field("soupsearch-eval-v1", description="bundled name or a JSONL/CSV/Parquet path")
    subset: int | None = Field(None, ge=1, description="stratified sample of this many items (seeded)")
    holdout: float = Field(0.25, ge=0, le=0.5,
                           description="share of the (subset) items set aside, never seen by the search, to score "
                                       "the chosen merges on (stratified by category and topic, seeded with "
                                       "search.seed); 0 disables")


class ExperimentConfig(_Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    dir: str = Field("runs", description="experiments are written to DIR/NAME")
    storage: str | None = Field(None, description="Optuna RDB URL; default sqlite file in the experiment folder")
    ray_address: str | None = Field(None, description="None starts a local Ray; 'auto' joins a running cluster")
    trackers: list[Literal["mlflow", "wandb"]] = Field(
        default_factory=list, description="experiment trackers fed by Ray Tune's logger callbacks: one run per trial "
                                          "with every objective, its interval and the timings (search/trackers.py)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<experiment folder>/"
                                                     "mlflow.db")
    wandb_project: str | None = Field(None, description="W&B project; default experiment.name")

    @field_validator("trackers")
    @classmethod
    def _installed(cls, trackers: list[str]) -> list[str]:
        """A tracker whose package is missing is refused now, with the extra to install, not
        when the Tuner starts after the references were scored."""
        from search.trackers import missing_package

        reasons = [r for r in map(missing_package, trackers) if r]
        if reasons:
            raise ValueError("; ".join(reasons))
        return list(dict.fromkeys(trackers))

    @model_validator(mode="after")
    def _tracker_settings_used(self) -> "ExperimentConfig":
        for field, tracker in (("mlflow_uri", "mlflow"), ("wandb_project", "wandb")):
            if getattr(self, field) is not None and tracker not in self.trackers:
                raise ValueError(f"{field} is set but trackers does not list {tracker}; add it: trackers: [{tracker}]")
        return self


SOUP_METHODS = ("lerp", "slerp", "slerp_lerp_norms")


class StudyConfig(_Strict):
    """`run_search.py study soups|methods`: the heterogeneous-soups tables and the method league.

    λ is the share of the second model of a pair everywhere: λ = 0 is the first model,
    λ = 1 the second (LERP θ = (1−λ)θ1 + λθ2; SLERP on alignment vectors with t = λ)."""

    lambdas: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75],
                                 description="λ of the heterogeneous pairs (the paper's grid)")
    homogeneous_lambdas: list[float] = Field(default_factory=lambda: [0.5])
    soup_methods: list[Literal["lerp", "slerp", "slerp_lerp_norms"]] = Field(
        default_factory=lambda: list(SOUP_METHODS),
        description="lerp; slerp: SLERP of alignment vectors on all parameters; slerp_lerp_norms: norms LERP'd")
    heterogeneous: list[tuple[str, str]] | None = Field(
        None, description="pairs of different methods; default: every pair of sources that are not homogeneous "
                          "re-runs")
    homogeneous: list[tuple[str, str]] | None = Field(
        None, description="pairs of runs of one method (another seed/data order); default with the example "
                          "family: (m, m-s1) for m in example_homogeneous")
    example_homogeneous: list[str] = Field(default_factory=lambda: ["dpo", "kto", "orpo"],
                                           description="example variants re-trained with seed 1 for homogeneous pairs")
    methods: list[str] | None = Field(None, description="study methods: default every registered merge method")
    search_budget: int = Field(8, ge=0, description="study methods: searched trials after each method's defaults")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples for the confidence intervals")

    @field_validator("lambdas", "homogeneous_lambdas")
    @classmethod
    def _unit(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad or not values:
            raise ValueError(f"λ values must be in [0, 1] and at least one given, got {values}")
        return values

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        unknown = [m for m in methods or [] if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown merge method(s) {unknown}; known: {', '.join(method_names())}")
        return methods


class SearchConfig(_Strict):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    models: ModelsConfig
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    search: SearchSettings = Field(default_factory=SearchSettings)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)

    @model_validator(mode="after")
    def _gpu_share_fits(self) -> "SearchConfig":
        """Workers sharing a GPU (workers.gpus < 1) must each ask vLLM for at most their share
        of its memory, or the second engine on the card fails to start."""
        share, util = self.workers.gpus, self.serving.engine.gpu_memory_utilization
        if 0 < share < 1 and util > share:
            raise ValueError(f"serving.engine.gpu_memory_utilization ({util}) must be ≤ workers.gpus ({share}) "
                             f"when {1 / share:.0f} workers share a GPU; set it to e.g. {round(share * 0.9, 2)}")
        return self

    @model_validator(mode="after")
    def _gpus_cover_the_engines(self) -> "SearchConfig":
        tp = self.serving.engine.tensor_parallel_size
        if tp > 1 and self.workers.gpus < tp:
            raise ValueError(f"workers.gpus ({self.workers.gpus:g}) must be ≥ serving.engine.tensor_parallel_size "
                             f"({tp}): each merge worker's engine spans that many GPUs")
        judge = self.judging.judge
        if judge.backend == "vllm" and judge.distributed_executor_backend != "ray" and \
                self.workers.judge_gpus and self.workers.judge_gpus < judge.tensor_parallel_size:
            raise ValueError(f"workers.judge_gpus ({self.workers.judge_gpus:g}) must be ≥ the judge's "
                             f"tensor_parallel_size ({judge.tensor_parallel_size})")
        return self

    @model_validator(mode="after")
    def _grid_is_lambda_only(self) -> "SearchConfig":
        if self.search.sampler == "grid":
            # The grid sweeps the interpolation weight λ alone: methods of other families
            # have parameters (a scale, a density) it would leave at a fixed value.
            grid = method_names(family="interpolation")
            extra = [m for m in self.space.methods if m not in grid]
            if extra:
                raise ValueError(f"search.sampler grid sweeps λ only; space.methods {extra} have other parameters "
                                 f"(grid methods: {', '.join(grid)})")
            if self.space.layer_curve is not None:
                raise ValueError("search.sampler grid sweeps one λ per merge; remove space.layer_curve")
        return self

    def experiment_dir(self, root: Path = ROOT) -> Path:
        path = Path(self.experiment.dir)
        return (path if path.is_absolute() else root / path) / self.experiment.name


def parse_search_config(data: Any, source: str = "<config>") -> SearchConfig:
    return validate_mapping(SearchConfig, data, source, SearchConfigError, "config")


def load_search_config(path: str | Path) -> SearchConfig:
    path = Path(path)
    return parse_search_config(read_yaml(path, SearchConfigError), str(path))
