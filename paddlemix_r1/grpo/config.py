"""GRPO configuration: one documented dataclass, filled from YAML plus ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from paddlemix_r1.families import VISION_FAMILIES

if typing.TYPE_CHECKING:
    from paddlemix_r1.models.lora import LoraConfig
    from paddlemix_r1.rewards.reasoner import ReasonerConfig

# Why dtype float16 is refused (policy and reference).
_FLOAT16_REASON = (
    "use bfloat16 (GPU) or float32. Paddle's GPU repeat_interleave kernel (repeat_interleave_kernel.cu) is "
    "registered for float32, float64, int32, int64 and bfloat16 only, and the rollout and the shared-prefix "
    "pass repeat tensors per completion; and fp16 training needs loss scaling, while the trainer (and its "
    "group-sharded runs, built without a GradScaler) has none.")


LR_SCHEDULERS = ("constant", "linear", "cosine")
"""lr_scheduler_type values (trainer.lr_lambda)."""
DTYPES = ("float32", "fp32", "bfloat16", "bf16")
"""Policy / reference dtypes a run accepts (float16: see ``_FLOAT16_REASON``)."""
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

# Lower bounds of integer fields (num_generations has its own message, in _check_ranges).
_INT_AT_LEAST = {"prompts_per_step": 1, "max_prompt_length": 1, "max_completion_length": 1, "num_iterations": 1,
                 "steps_per_generation": 1, "gradient_accumulation_steps": 1, "logprob_chunk_size": 1,
                 "warmup_steps": 0, "max_steps": 1, "max_consecutive_nonfinite": 1, "num_train_samples": 1,
                 "logging_steps": 1, "log_completions_steps": 0, "save_steps": 0, "save_total_limit": 0,
                 "seed": 0, "top_k": 0, "min_pixels": 1, "max_pixels": 1}
# Float fields by range; every float field must also be finite. (The lora_* fields: LoraConfig, with use_peft.)
_FLOAT_POSITIVE = ("temperature", "learning_rate", "adam_epsilon", "sync_timeout")
_FLOAT_NON_NEGATIVE = ("weight_decay", "max_grad_norm", "beta", "epsilon_low", "epsilon_high")
_FLOAT_UNIT = ("adam_beta1", "adam_beta2")  # in [0, 1)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the field's type: "false" -> False for bools, 3.0 -> 3 for ints, "1e-6" -> 1e-6 for floats
    (YAML 1.1 reads 1e-6 without a dot as a string); anything else is a ValueError naming the field."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"field {name!r} expects a list (in YAML: [a, b]), got {_describe(value)}")
        return [_convert(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"field {name!r} expects true or false, got {_describe(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number)
        raise ValueError(f"field {name!r} expects an integer, got {_describe(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass  # the error below names the field
        raise ValueError(f"field {name!r} expects a number, got {_describe(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"field {name!r} expects a string, got {_describe(value)}")
    raise TypeError(f"field {name!r}: no conversion for its type {annotation!r}")


def _one_of(name: str, value: Any, allowed: typing.Iterable[Any], why: str = "") -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported: use one of {allowed}{why}")


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
    """"synthetic_counting", "synthetic_rec", "synthetic_geoqa", or "files" (read data_files, or
    data_file_paths, with the data readers: paddlemix_r1/data/readers.py lists the formats)."""
    data_files: list[str] = field(default_factory=list)
    """Training files for dataset="files" (each entry may hold several paths separated by ':'), with image_root."""
    image_root: str = ""
    """Directory image paths in data_files are relative to: one for all files, or one per file (':'-separated)."""
    data_file_paths: str | None = None
    """VLM-R1's --data_file_paths: data files separated by ':' (dataset="files"), each paired with the
    image_folders entry at the same position. Instead of data_files / image_root."""
    image_folders: str | None = None
    """VLM-R1's --image_folders: one image folder per data_file_paths entry, ':'-separated (equal counts)."""
    reward_method: str | None = None
    """VLM-R1's --reward_method: the accuracy method of each data file (default, mcq, yes_no, math,
    all_match, od_ap, od_ap50, odLength, weighted_sum, llm), ':'-separated, exactly one per file. None:
    "default" for every file. A row's own accu_reward_method overrides its file's; every row gets the
    accu_reward_method column the ``accuracy`` reward dispatches on."""
    task: str = "counting"
    """The task of rows that name none (rec | counting | geoqa | general; paddlemix_r1/tasks): it parses
    their gold answers and gives their prompts. A row's own ``task`` field wins, so a dataset can mix tasks."""
    task_type: str | None = None
    """VLM-R1's --task_type: the prompt method (template) of the training prompts, a method of every task
    in the dataset in the one prompt table (paddlemix_r1/tasks/prompts.py): general has default, rec, ic,
    odLength, gui; rec has r1 (= rec), baseline; counting and geoqa have train, r1, baseline. None: each
    task's training prompt (rec: r1, counting / geoqa: train, general: default)."""
    num_train_samples: int = 64
    """Rows generated for synthetic datasets."""
    prompt_template: str | None = None
    """A custom question template with {Question} for every row, instead of the tasks' templates."""
    min_pixels: int | None = None
    """Override the checkpoint's preprocessor min_pixels."""
    max_pixels: int | None = None
    """Override the checkpoint's preprocessor max_pixels."""
    skip_bad: bool = False
    """dataset=files: leave bad rows (malformed fields, unreadable images, undecodable lines) out, counted and
    reported with their file:line, instead of stopping at the first one."""
    check_images: str = "open"
    """dataset=files: how images are checked when rows are read (data/readers.py CHECK_IMAGES): "open" reads
    each file's header, "decode" decodes it completely (also catches truncated files; slower), "none"."""

    # ----- rollout -----
    prompts_per_step: int = 2
    """B: distinct prompts per optimizer step and rank (each gets num_generations completions); a step of
    a job with W ranks covers W * B distinct prompts."""
    num_generations: int = 8
    """G: completions per prompt, at least 2 (the advantage compares a completion with its group)."""
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
    """constant | linear | cosine (after warmup; ``LR_SCHEDULERS``)."""
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
    """A checkpoint directory, or "latest" (the newest intact checkpoint in output_dir; none: a fresh start)."""
    save_on_interrupt: bool = False
    """On SIGTERM / SIGINT: finish the current step and save a checkpoint before stopping (False: stop at the
    next safe point without saving; the newest checkpoint stands)."""
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

    # ----- the frozen reasoner of the ``reasoner`` reward (rewards/reasoner.py; RACRO) -----
    reasoner_model_path: str | None = None
    """Text-only checkpoint (Qwen2ForCausalLM layout, e.g. R1-Distill-Qwen) run in this process, frozen."""
    reasoner_url: str | None = None
    """Or an OpenAI-compatible server (base URL, e.g. http://127.0.0.1:8000/v1); exactly one of the two."""
    reasoner_model_name: str | None = None
    """Model name sent to the server (default: the last part of reasoner_model_path, else "reasoner")."""
    reasoner_num_samples: int = 1
    """Answers per caption; the reward is their mean correctness."""
    reasoner_temperature: float = 1.0
    """0 means greedy."""
    reasoner_top_p: float = 1.0
    reasoner_max_tokens: int = 8192
    """Token budget per answer."""
    reasoner_batch_size: int = 64
    """Captions per in-process generate call."""
    reasoner_device: str = "auto"
    """In-process reasoner's device: "auto" is the policy's; or e.g. "gpu:1"."""
    reasoner_dtype: str = "float32"
    reasoner_timeout_s: float = 600.0
    """Per request (server)."""
    reasoner_max_workers: int = 8
    """Concurrent requests (server)."""
    reasoner_seed: int = 0
    """In-process sampling seed."""

    # ----- LoRA -----
    use_peft: bool = False
    """Train LoRA adapters (models/lora.py) on the decoder's projections instead of the full model (the vision
    tower is frozen and never adapted); the names are VLM-R1's (TRL's) flags. With beta > 0 the reference is
    the same model with its adapters switched off (no second copy). Checkpoints hold the merged HF weights
    (model/) and the PEFT adapter (adapter/)."""
    lora_r: int = 16
    """Adapter rank."""
    lora_alpha: float = 32.0
    """The adapter's update is scaled by lora_alpha / lora_r."""
    lora_dropout: float = 0.05
    """Dropout on the adapters' input in the gradient pass (rollouts and no-grad passes run in eval mode)."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Decoder projections that get an adapter."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the whole config (types, ranges, enums, registry names) and convert values to the field types;
        ValueError naming the field. Files are checked by ``check_paths`` when a run starts."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _convert(f.name, getattr(self, f.name), hints[f.name]))
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon_low
        if self.reward_weights is None:
            self.reward_weights = [1.0] * len(self.reward_funcs)
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries, reward_funcs {len(self.reward_funcs)}")
        self._check_ranges()
        self._check_names()
        if self.prompts_per_step % self.gradient_accumulation_steps:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} must be divisible by "
                             f"gradient_accumulation_steps={self.gradient_accumulation_steps}")
        self._check_data()
        if self.sharding_offload and self.sharding_stage != 3:
            raise ValueError(
                f"sharding_offload=true needs sharding_stage=3 (got sharding_stage={self.sharding_stage}): at "
                "stages 1/2 Paddle's GroupShardedOptimizerStage2(offload=True) asserts fp16 parameters "
                "(group_sharded_optimizer_stage2.py), and stage 0 has no sharded state to offload.")
        if self.use_peft:
            self.lora_config()  # validates the lora_* fields
            for name in ("ref_model_offload", "ref_model_dtype"):
                if getattr(self, name):
                    raise ValueError(f"{name} does not apply with use_peft=true: the reference is the policy itself "
                                     "with its adapters switched off")

    def _check_ranges(self) -> None:
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2, got {self.num_generations}: a completion's advantage is its reward "
                "minus its group's mean, so with one completion per prompt every advantage is 0 and training "
                "would do nothing (TRL refuses it too)")
        for name, low in _INT_AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} is larger than max_pixels={self.max_pixels}")
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if float in (typing.get_args(hints[f.name]) or (hints[f.name],)) and value is not None \
                    and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        for i, w in enumerate(self.reward_weights):
            if not math.isfinite(w):
                raise ValueError(f"reward_weights[{i}] must be a finite number, got {w}")
        for name in _FLOAT_POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in _FLOAT_NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in _FLOAT_UNIT:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def _check_names(self) -> None:
        """Enumerated fields and names that must be in a registry."""
        from paddlemix_r1.data import SYNTHETIC
        from paddlemix_r1.data.readers import CHECK_IMAGES
        from paddlemix_r1.grpo.advantages import SCALE_REWARDS
        from paddlemix_r1.grpo.loss import LOSS_REDUCTIONS
        from paddlemix_r1.rewards import list_rewards

        for name in ("dtype", "ref_model_dtype"):
            value = getattr(self, name)
            if value in ("float16", "fp16"):
                raise ValueError(f"{name}={value!r} is not supported: {_FLOAT16_REASON}")
            if value is not None:
                _one_of(name, value, DTYPES, " (float32 on CPU or GPU, bfloat16 on GPU; the models' fp32 regions "
                                             "and Paddle's kernels are written for these)")
        _one_of("tiny_family", self.tiny_family, VISION_FAMILIES)
        _one_of("dataset", self.dataset, [*SYNTHETIC, "files"])
        _one_of("loss_type", self.loss_type, LOSS_REDUCTIONS)
        _one_of("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        _one_of("lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        _one_of("check_images", self.check_images, CHECK_IMAGES)
        _one_of("device", self.device, ("auto", "cpu", "gpu"))
        _one_of("sharding_stage", self.sharding_stage, (0, 1, 2, 3))
        known = list_rewards()
        unknown = [r for r in self.reward_funcs if r not in known]
        if unknown:
            raise ValueError(f"reward_funcs: unknown reward(s) {unknown}; registered rewards: {known} "
                             "(register_reward adds one; register it before the config is built)")
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: give at least one registered reward")
        if "reasoner" in self.reward_funcs:
            if (self.reasoner_model_path is None) == (self.reasoner_url is None):
                raise ValueError("reward_funcs has 'reasoner': set exactly one of reasoner_model_path (a text-only "
                                 "checkpoint run in-process) and reasoner_url (an OpenAI-compatible server)")
            self.reasoner_config()  # validates the reasoner_* fields

    def check_paths(self) -> None:
        """The files the run reads exist (FileNotFoundError naming the field); called when a run starts, before
        any model loads."""
        if self.model_name_or_path != "tiny" and not os.path.isdir(self.model_name_or_path):
            raise FileNotFoundError(f"model_name_or_path={self.model_name_or_path!r}: no such directory "
                                    "(a checkpoint directory with config.json, or \"tiny\")")
        if "reasoner" in self.reward_funcs and self.reasoner_model_path is not None and not os.path.isdir(
                self.reasoner_model_path):
            raise FileNotFoundError(f"reasoner_model_path={self.reasoner_model_path!r}: no such directory")
        if self.dataset != "files":
            return
        files, _ = self.data_files_and_roots()
        field_name = "data_file_paths" if self.data_file_paths is not None else "data_files"
        if not files:
            raise ValueError(f"dataset=files needs data files ({field_name} is empty)")
        for path in files:
            if not os.path.exists(path):
                raise FileNotFoundError(f"{field_name}: {path} does not exist")

    def reasoner_config(self) -> ReasonerConfig:
        """The ``rewards.reasoner.ReasonerConfig`` of the reasoner_* fields."""
        from paddlemix_r1.rewards.reasoner import ReasonerConfig

        return ReasonerConfig.from_fields(self)

    def lora_config(self) -> LoraConfig:
        """The ``models.lora.LoraConfig`` of the lora_* fields."""
        from paddlemix_r1.models.lora import LoraConfig

        return LoraConfig(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                          target_modules=tuple(self.lora_target_modules))

    def _check_data(self) -> None:
        """The data block's fields agree with each other (paths are checked when the files are read)."""
        from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS
        from paddlemix_r1.tasks import get_task

        get_task(self.task)
        if self.task_type is not None:
            if self.prompt_template is not None:
                raise ValueError("give task_type (a template of the prompt table) or prompt_template, not both")
            try:  # the default task must have it; the tasks rows name themselves are checked when loaded
                get_task(self.task).template(self.task_type)
            except ValueError as e:
                raise ValueError(f"task_type {self.task_type!r}: {e}") from None
        if (self.data_file_paths is None) != (self.image_folders is None):
            raise ValueError("data_file_paths and image_folders go together (VLM-R1's flags): give both or neither")
        if self.data_file_paths is not None:
            if self.data_files or self.image_root:
                raise ValueError("give data_file_paths / image_folders or data_files / image_root, not both")
            files, folders = self.data_file_paths.split(":"), self.image_folders.split(":")
            if len(files) != len(folders):
                raise ValueError(f"data_file_paths has {len(files)} files but image_folders has {len(folders)} "
                                 "folders: give one image folder per data file")
        if self.reward_method is not None:
            if self.dataset != "files":
                raise ValueError(f"reward_method is per data file: it needs dataset=files, got {self.dataset!r}")
            methods = self.reward_method.split(":")
            n_files = len(self.data_files_and_roots()[0])
            if len(methods) != n_files:
                raise ValueError(f"reward_method has {len(methods)} methods but there are {n_files} data files: "
                                 "give one accuracy method per data file")
            unknown = [m for m in methods if m not in ACCURACY_METHODS]
            if unknown:
                raise ValueError(f"reward_method: unknown accuracy method(s) {unknown}; known: {list(ACCURACY_METHODS)}")
        if (self.data_file_paths is not None or self.data_files) and self.dataset != "files":
            raise ValueError(f"data files are read with dataset=files, got dataset={self.dataset!r}")

    def data_files_and_roots(self) -> tuple[list[str], list[str]]:
        """The data files one by one and the image root of each (data_file_paths / image_folders, else
        data_files with image_root: one root for all, or one per file)."""
        if self.data_file_paths is not None:
            return self.data_file_paths.split(":"), self.image_folders.split(":")
        files = [p for entry in self.data_files for p in entry.split(":") if p]
        roots = self.image_root.split(":")
        return files, roots * len(files) if len(roots) == 1 else roots

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GRPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}")
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

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
