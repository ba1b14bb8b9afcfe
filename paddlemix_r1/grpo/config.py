"""GRPO configuration: one documented dataclass, filled from YAML plus ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

# Answer-format templates appended to each question, per task (recorded in every run's config).
DEFAULT_TEMPLATES = {
    "rec": "{Question} First output the thinking process in <think> </think> tags and then output the final answer "
           "in <answer> </answer> tags. Output the final answer in JSON format.",
    "counting": "{Question} Output the thinking process in <think> </think> and final answer (number) in "
                "<answer> </answer> tags.",
    "geoqa": "{Question} Output the thinking process in <think> </think> and final answer (number) in "
             "<answer> </answer> tags.",
}


# Why dtype float16 is refused (policy and reference).
_FLOAT16_REASON = (
    "use bfloat16 (GPU) or float32. Paddle's GPU repeat_interleave kernel (repeat_interleave_kernel.cu) is "
    "registered for float32, float64, int32, int64 and bfloat16 only, and the rollout and the shared-prefix "
    "pass repeat tensors per completion; and fp16 training needs loss scaling, while the trainer (and its "
    "group-sharded runs, built without a GradScaler) has none.")


def _coerce_number(name: str, value: Any, annotation: Any, source: str) -> Any:
    """YAML reads 1e-6 (no dot) as a string; numbers for float fields are converted, with a clear error."""
    allowed = typing.get_args(annotation) or (annotation,)
    if float in allowed and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as e:
            raise ValueError(f"{source}: field {name!r} expects a number, got {value!r}") from e
    return value


@dataclass
class GRPOConfig:
    # ----- model -----
    model_name_or_path: str = "tiny"
    """Checkpoint directory (HF layout), or "tiny" to build a tiny random Qwen2.5-VL in output_dir/tiny-model."""
    tiny_family: str = "qwen2_5_vl"
    """Family of the "tiny" model: qwen2_vl or qwen2_5_vl."""
    dtype: str = "float32"
    """Training dtype of the policy: float32 on CPU; bfloat16 on GPU keeps fp32 master weights. float16 is
    refused (see ``_FLOAT16_REASON``)."""
    freeze_vision: bool = False
    """Keep the vision tower (and merger) fixed: no gradients, excluded from the optimizer."""
    gradient_checkpointing: bool = False
    """Recompute decoder layers in the backward pass instead of storing their activations."""

    # ----- data -----
    dataset: str = "synthetic_counting"
    """"synthetic_counting", "synthetic_rec", "synthetic_geoqa", or "files" (read data_files with the data readers)."""
    data_files: list[str] = field(default_factory=list)
    """Training files for dataset="files"."""
    image_root: str = ""
    """Directory image paths in data_files are relative to."""
    task: str = "counting"
    """rec | counting | geoqa: picks the prompt template default and the coordinate conventions."""
    num_train_samples: int = 64
    """Rows generated for synthetic datasets."""
    prompt_template: str | None = None
    """Question template with {Question}; None uses DEFAULT_TEMPLATES[task]."""
    min_pixels: int | None = None
    """Override the checkpoint's preprocessor min_pixels."""
    max_pixels: int | None = None
    """Override the checkpoint's preprocessor max_pixels."""

    # ----- rollout -----
    prompts_per_step: int = 2
    """B: distinct prompts per optimizer step and rank (each gets num_generations completions); a step of
    a job with W ranks covers W * B distinct prompts."""
    num_generations: int = 8
    """G: completions per prompt."""
    max_prompt_length: int = 1024
    """Longest prompt in tokens (image tokens included); a longer one is an error, never truncated."""
    max_completion_length: int = 256
    """Generation budget per completion."""
    temperature: float = 1.0
    """Sampling temperature; the log-prob passes divide logits by the same value."""
    top_p: float = 1.0
    top_k: int | None = None

    # ----- objective -----
    reward_funcs: list[str] = field(default_factory=lambda: ["counting", "format"])
    """Names in the reward registry."""
    reward_weights: list[float] | None = None
    """One weight per reward function (None: all 1.0). The total reward is the weighted sum."""
    loss_type: str = "grpo"
    """grpo | bnpo | dr_grpo | dapo, as TRL defines them."""
    beta: float = 0.04
    """Weight of the k3 KL to the reference model; 0 loads no reference model."""
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    """Upper clip; None means epsilon_low (symmetric)."""
    scale_rewards: str = "group"
    """group | batch | none: what the advantage is divided by."""
    num_iterations: int = 1
    """mu: optimizer passes over each generated batch (old log-probs are recorded when > 1)."""
    steps_per_generation: int = 1
    """Optimizer steps served by one generation round (each takes prompts_per_step prompts)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step; prompts_per_step must divide by it."""
    logprob_chunk_size: int = 512
    """Rows per chunk in the chunked log-softmax."""

    # ----- optimisation -----
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "constant"
    """constant | linear | cosine (after warmup)."""
    warmup_steps: int = 0
    max_steps: int = 10
    max_consecutive_nonfinite: int = 3
    """A non-finite loss or gradient skips the step; this many in a row stops the run."""

    # ----- bookkeeping -----
    output_dir: str = "outputs/grpo"
    seed: int = 42
    logging_steps: int = 1
    log_completions_steps: int = 10
    """Write sample completions to output_dir/completions.jsonl every N steps (0: never)."""
    save_steps: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    save_total_limit: int = 2
    """Keep the last k checkpoints."""
    resume_from_checkpoint: str | None = None
    """A checkpoint directory, or "latest" (the newest in output_dir)."""
    visualdl: bool = True
    progress_bar: bool = True

    # ----- devices and data parallelism (paddle.distributed.launch; see docs/distributed.md) -----
    device: str = "auto"
    """auto | cpu | gpu. Under the launcher each process takes one device; on CPU ranks talk over gloo."""
    sync_timeout: float = 1800.0
    """Seconds a rank waits for the others at a sync point before the job is declared hung and stops."""
    sharding_stage: int = 0
    """0: plain data parallelism (gradients all-reduced). GPU only: 1 shards the optimizer state, 2 also
    the gradients, 3 also the parameters (Paddle's group_sharded_parallel)."""
    sharding_offload: bool = False
    """GPU only, with sharding_stage=3: keep the sharded optimizer state in host memory (Paddle's stage 1/2
    offload supports fp16 parameters only)."""
    ref_model_dtype: str | None = None
    """dtype of the reference model; None: the policy's dtype. "bfloat16" halves it next to an fp32 policy (GPU).
    float16 is refused."""
    ref_model_offload: bool = False
    """GPU only: keep the reference model in host memory, moving it to the GPU for its pass only."""

    def __post_init__(self) -> None:
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon_low
        if self.reward_weights is None:
            self.reward_weights = [1.0] * len(self.reward_funcs)
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries, reward_funcs {len(self.reward_funcs)}")
        if self.prompts_per_step % self.gradient_accumulation_steps:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} must be divisible by "
                             f"gradient_accumulation_steps={self.gradient_accumulation_steps}")
        if self.task not in DEFAULT_TEMPLATES:
            raise ValueError(f"task must be one of {sorted(DEFAULT_TEMPLATES)}, got {self.task!r}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {self.device!r}")
        if self.sharding_stage not in (0, 1, 2, 3):
            raise ValueError(f"sharding_stage must be 0, 1, 2 or 3, got {self.sharding_stage}")
        for name in ("dtype", "ref_model_dtype"):
            if getattr(self, name) in ("float16", "fp16"):
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported: {_FLOAT16_REASON}")
        if self.sharding_offload and self.sharding_stage != 3:
            raise ValueError(
                f"sharding_offload=true needs sharding_stage=3 (got sharding_stage={self.sharding_stage}): at "
                "stages 1/2 Paddle's GroupShardedOptimizerStage2(offload=True) asserts fp16 parameters "
                "(group_sharded_optimizer_stage2.py), and stage 0 has no sharded state to offload.")
        if self.sync_timeout <= 0:
            raise ValueError(f"sync_timeout must be > 0 seconds, got {self.sync_timeout}")
        for name in ("num_generations", "prompts_per_step", "max_steps", "num_iterations", "steps_per_generation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def template(self) -> str:
        return self.prompt_template or DEFAULT_TEMPLATES[self.task]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GRPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}")
        types = typing.get_type_hints(cls)
        return cls(**{k: _coerce_number(k, v, types[k], source) for k, v in d.items()})

    @classmethod
    def load(cls, path: str | None = None, overrides: list[str] | None = None) -> GRPOConfig:
        """YAML file (optional) then ``key=value`` overrides (values parsed as YAML: 1e-6, true, [a, b])."""
        d: dict[str, Any] = {}
        if path:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
            if not isinstance(d, dict):
                raise ValueError(f"{path}: expected a mapping of config fields")
        types = typing.get_type_hints(cls)
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            if key not in types:
                raise ValueError(f"override {item!r}: unknown config field {key!r}")
            value = yaml.safe_load(raw)
            if types[key] is str and not isinstance(value, str):
                value = raw  # e.g. output_dir=123 stays a string
            d[key] = value
        return cls.from_dict(d, source=path or "overrides")
