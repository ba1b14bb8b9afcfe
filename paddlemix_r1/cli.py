"""``paddlemix-r1`` command line: small subcommands over the library.

    paddlemix-r1 generate [--model_path D] [--image I] [--prompt P]   # look at what a checkpoint answers
    paddlemix-r1 tiny-checkpoint --out D [--family qwen2_5_vl]         # build a tiny random checkpoint
    paddlemix-r1 train --config configs/tiny_cpu.yaml [key=value ...]  # GRPO training
    paddlemix-r1 curriculum --config configs/curr_reft_qwen2_5_vl_3b.yaml [key=value ...]  # staged GRPO
    paddlemix-r1 reject-sample --config configs/curr_reft_reject_sft_3b.yaml [--flag value ...]  # RS-SFT data
    paddlemix-r1 demo [--output_dir D] [--smoke] [--recipe curriculum|racro]  # the whole pipeline on CPU, minutes
    paddlemix-r1 racro-eval --data F --output_dir D --vlm_path V --reasoner_path R  # RACRO's 3-step inference
    paddlemix-r1 visrl-generate --config C [key=value ...]  # VisRL preference pairs from two-turn trajectories
    paddlemix-r1 dpo --config configs/visrl_dpo_stage1_qwen2_vl_7b.yaml [key=value ...]  # step-level DPO
    paddlemix-r1 visrl-online --config configs/visrl_online_grpo_qwen2_vl_7b.yaml [key=value ...]  # GRPO on them
    paddlemix-r1 doctor [--report doctor_report.json] [--contracts]    # check this machine (run it first)
    paddlemix-r1 serve --model_path D [--port 8000] [--max_batch_size 8]  # OpenAI-compatible chat endpoint
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from paddlemix_r1.families import VISION_FAMILIES

DEFAULT_TINY_DIR = os.path.join("outputs", "tiny-qwen2_5_vl")


def _demo_image(path: str) -> str:
    """A small synthetic picture (three shapes) so the default run needs no files."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (224, 168), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.rectangle([20, 30, 80, 90], fill=(220, 40, 40))
    d.ellipse([110, 40, 170, 100], fill=(40, 90, 220))
    d.polygon([(60, 150), (100, 100), (140, 150)], fill=(40, 170, 60))
    img.save(path)
    return path


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    from paddlemix_r1.models import build_tiny_checkpoint

    build_tiny_checkpoint(args.out, family=args.family, seed=args.seed)
    print(f"wrote a tiny {args.family} checkpoint to {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import paddle

    from paddlemix_r1.generation import generate
    from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
    from paddlemix_r1.processing import Processor
    from paddlemix_r1.tasks import build_conversation

    model_path = args.model_path
    if model_path is None:
        model_path = DEFAULT_TINY_DIR
        if not os.path.exists(os.path.join(model_path, "config.json")):
            print(f"no --model_path: building a tiny random Qwen2.5-VL checkpoint in {model_path}")
            build_tiny_checkpoint(model_path, family="qwen2_5_vl", seed=0)
    images = args.image or [_demo_image(os.path.join(os.path.dirname(model_path) or ".", "demo_image.png"))]
    for path in images:
        if not os.path.exists(path):
            print(f"error: image not found: {path}", file=sys.stderr)
            return 2
    proc = Processor.from_pretrained(model_path)
    model = from_pretrained(model_path, dtype=args.dtype)
    batch = proc([build_conversation(args.prompt, len(images))], [images])
    t0 = time.perf_counter()
    out = generate(model, batch, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                   num_return_sequences=args.num_return_sequences, eos_token_id=proc.eos_token_id,
                   pad_token_id=proc.pad_token_id, seed=args.seed)
    dt = time.perf_counter() - t0
    n_tokens = int(paddle.sum(out.completion_mask))
    for i, text in enumerate(proc.batch_decode(out.completion_ids.numpy().tolist(), skip_special_tokens=True)):
        print(f"--- completion {i} ---\n{text!r}")  # repr: a random tiny model often emits whitespace
    print(f"[{n_tokens} tokens in {dt:.2f} s, prompt {batch['input_ids'].shape[1]} tokens, model {model_path}]")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """GRPO training; under ``paddle.distributed.launch`` every rank runs this (see docs/distributed.md)."""
    from paddlemix_r1.distributed import get_env, run_guarded

    def train() -> int:
        from paddlemix_r1.grpo.config import GRPOConfig
        from paddlemix_r1.grpo.trainer import GRPOTrainer

        cfg = GRPOConfig.load(args.config, args.overrides)
        history = GRPOTrainer(cfg).train()
        env = get_env()
        if env.is_main and history:
            last = history[-1]
            print(f"done: step {int(last['step'])} on {env.world_size} rank(s), reward {last['reward']:.4f}, "
                  f"checkpoints in {cfg.output_dir}")
        return 0

    # A failure on any rank is reported to the others and ends this process at once (non-zero).
    return run_guarded(train)


def cmd_curriculum(args: argparse.Namespace) -> int:
    """Curriculum GRPO (grpo/curriculum.py); under ``paddle.distributed.launch`` every rank runs this."""
    from paddlemix_r1.distributed import get_env, run_guarded

    def curriculum() -> int:
        from paddlemix_r1.grpo.curriculum import CurriculumConfig, format_summary, run_curriculum

        cfg = CurriculumConfig.load(args.config, args.overrides)
        results = run_curriculum(cfg)
        if get_env().is_main:
            print(format_summary(results))
            print(f"summary and plot in {cfg.output_dir}; next stage would start from {results[-1].handoff}")
        return 0

    return run_guarded(curriculum)


def cmd_reject_sample(args: argparse.Namespace) -> int:
    """Rejection-sampling SFT data (and SFT on it): grpo/reject_sample.py."""
    from paddlemix_r1.grpo.reject_sample import RejectSampleConfig, run_reject_sample

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "fn", "config")}
    run_reject_sample(RejectSampleConfig.load(args.config, flags))
    return 0


def cmd_visrl_generate(args: argparse.Namespace) -> int:
    """VisRL's self-evolution preference data (paddlemix_r1/focus/selfgen.py)."""
    from paddlemix_r1.focus.selfgen import GenerateConfig, run_generate

    result = run_generate(GenerateConfig.load(args.config, args.overrides))
    print(f"{len(result.records)} pairs from {result.items} items ({result.trajectories} trajectories, "
          f"{result.generated_tokens} generated tokens) -> {result.output}")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    """Step-level DPO on VisRL pairs (paddlemix_r1/grpo/dpo_train.py)."""
    from paddlemix_r1.grpo.dpo_train import DPOTrainConfig, run_dpo

    history, last = run_dpo(DPOTrainConfig.load(args.config, args.overrides))
    print(f"done: {len(history)} steps, final loss {history[-1]['loss']:.4f}; checkpoint {last}")
    return 0


def cmd_visrl_online(args: argparse.Namespace) -> int:
    """GRPO over two-turn focus trajectories (paddlemix_r1/focus/online.py)."""
    from paddlemix_r1.focus.online import run_online

    history = run_online(args.config, args.overrides)
    print(f"done: step {int(history[-1]['step'])}, reward {history[-1]['reward']:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    if args.recipe == "visrl":
        from paddlemix_r1.visrl_demo import VisrlDemoSettings as Settings
        from paddlemix_r1.visrl_demo import run_visrl_demo as run
    elif args.recipe == "racro":
        from paddlemix_r1.racro_demo import RacroDemoSettings as Settings
        from paddlemix_r1.racro_demo import run_racro_demo as run
    elif args.recipe == "curriculum":
        from paddlemix_r1.curriculum_demo import CurriculumDemoSettings as Settings
        from paddlemix_r1.curriculum_demo import run_curriculum_demo as run
    else:
        from paddlemix_r1.demo import DemoSettings as Settings
        from paddlemix_r1.demo import run_demo as run
    settings = Settings.smoke() if args.smoke else Settings()
    if args.seed is not None:
        settings = dataclasses.replace(settings, seed=args.seed)
    default_dir = {"counting": "demo"}.get(args.recipe, f"demo_{args.recipe}")
    run(args.output_dir or os.path.join("outputs", default_dir), settings)
    return 0


def cmd_racro_eval(args: argparse.Namespace) -> int:
    """RACRO's inference pipeline: tentative answer, caption, reasoner (paddlemix_r1/racro.py)."""
    from paddlemix_r1.racro import RacroEvalSettings, run_racro_eval
    from paddlemix_r1.rewards.reasoner import ReasonerConfig

    reasoner = None
    if "reason" in args.steps:
        reasoner = ReasonerConfig(model_path=args.reasoner_path, url=args.reasoner_url,
                                  model_name=args.reasoner_model, temperature=args.reasoner_temperature,
                                  top_p=args.reasoner_top_p, max_tokens=args.reasoner_max_tokens,
                                  batch_size=args.batch_size, dtype=args.dtype, seed=args.seed)
    summary = run_racro_eval(RacroEvalSettings(
        data=args.data, output_dir=args.output_dir, image_root=args.image_root, steps=args.steps,
        vlm_path=args.vlm_path, reasoner=reasoner, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        limit=args.limit, dtype=args.dtype))
    if "accuracy" in summary:
        print(f"accuracy {summary['accuracy']:.4f} ({summary['correct']}/{summary['n']}); {summary['note']}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from paddlemix_r1.doctor import run

    return run(report=args.report, contracts=args.contracts)


def cmd_serve(args: argparse.Namespace) -> int:
    """OpenAI-compatible chat endpoint over one checkpoint (docs/serve.md)."""
    from paddlemix_r1.serve import ServeConfig, serve

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "fn", "log_level")}
    serve(ServeConfig(**flags), log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paddlemix-r1", description="GRPO for Qwen2-VL / Qwen2.5-VL in PaddlePaddle")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer a prompt about image(s) with a checkpoint")
    g.add_argument("--model_path", help=f"checkpoint dir (default: a tiny random model in {DEFAULT_TINY_DIR})")
    g.add_argument("--image", action="append", help="image path (repeat for several; default: a synthetic picture)")
    g.add_argument("--prompt", default="How many shapes are in the image? Answer in <answer> </answer> tags.")
    g.add_argument("--max_new_tokens", type=int, default=32)
    g.add_argument("--do_sample", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top_p", type=float, default=None)
    g.add_argument("--top_k", type=int, default=None)
    g.add_argument("--num_return_sequences", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    g.set_defaults(fn=cmd_generate)

    tr = sub.add_parser("train", help="GRPO training from a YAML config plus key=value overrides")
    tr.add_argument("--config", help="YAML file with GRPOConfig fields (see configs/)")
    tr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learning_rate=1e-6 max_steps=100")
    tr.set_defaults(fn=cmd_train)

    cu = sub.add_parser("curriculum", help="curriculum GRPO (Curr-ReFT: judge -> choice -> open) from one YAML recipe; "
                                           "resumable, runs under paddle.distributed.launch like train")
    cu.add_argument("--config", required=True, help="curriculum YAML (see configs/curr_reft_*.yaml)")
    cu.add_argument("overrides", nargs="*",
                    help="key=value: output_dir / model_name_or_path; a GRPOConfig field for every stage (e.g. "
                         "max_steps=2); <stage>.<key>=value for one stage (e.g. judge.learning_rate=1e-6, "
                         "open.eval.sample_num=100)")
    cu.set_defaults(fn=cmd_curriculum)

    rs = sub.add_parser("reject-sample", help="rejection sampling (Curr-ReFT): N completions per prompt, scored by "
                                              "task rewards or a 0-100 judge, best >= threshold to ms-swift JSONL; "
                                              "then SFT on it (--sft_steps)")
    rs.add_argument("--config", help="YAML of RejectSampleConfig fields (configs/curr_reft_reject_sft_*.yaml); "
                                     "flags override it")
    for flag, kind, text in [
        ("model_path", str, "checkpoint that samples (and is trained by --sft_steps)"),
        ("data_files", str, "data file or data-config YAML (repeat for several)"),
        ("image_root", str, "folder the rows' image paths are relative to"),
        ("task", str, "task of rows without a 'task' field"),
        ("prompt_method", str, "prompt method of the rows' tasks (default: each task's training prompt)"),
        ("max_rows", int, "use only the first N rows"),
        ("data_seed", int, "seed of the data config's random: sampling"),
        ("output", str, "ms-swift messages JSONL to write"),
        ("num_samples", int, "completions per prompt (N)"),
        ("threshold", float, "keep the best completion scoring >= this"),
        ("scorer", str, "rewards | judge"),
        ("reward_funcs", str, "scorer rewards: these rewards (repeat) instead of each row's task's"),
        ("reward_weights", float, "weights of --reward_funcs (repeat)"),
        ("judge_url", str, "scorer judge: OpenAI-compatible endpoint base, e.g. http://127.0.0.1:8000/v1"),
        ("judge_model", str, "model name sent to the judge"),
        ("judge_api_key_env", str, "environment variable holding the judge's API key"),
        ("judge_timeout_s", float, "per-request timeout; past it the score is a counted failure (0)"),
        ("judge_max_workers", int, "concurrent judge requests"),
        ("max_new_tokens", int, None), ("temperature", float, None), ("top_p", float, None), ("top_k", int, None),
        ("batch_size", int, "prompts per generate call"), ("max_prompt_length", int, None), ("seed", int, None),
        ("dtype", str, None),
        ("sft_steps", int, "SFT steps on the kept records after sampling (0: sample only)"),
        ("sft_data", str, "SFT on this ms-swift JSONL instead of sampling"),
        ("sft_image_root", str, "folder relative image paths of --sft_data are resolved against"),
        ("sft_learning_rate", float, "Curr-ReFT: 2e-7"), ("sft_batch_size", int, None),
        ("sft_output_dir", str, "where the SFT model is saved"),
    ]:
        many = flag in ("data_files", "reward_funcs", "reward_weights")
        rs.add_argument(f"--{flag}", type=kind, action="append" if many else "store", help=text)
    rs.add_argument("--freeze_vision", action=argparse.BooleanOptionalAction, default=None,
                    help="freeze the vision tower during SFT (Curr-ReFT: no)")
    rs.set_defaults(fn=cmd_reject_sample)

    d = sub.add_parser("demo", help="tiny model + synthetic counting: SFT warm-up, GRPO, evaluation (CPU, no downloads)")
    d.add_argument("--output_dir", default=None,
                   help="default outputs/demo (counting) or outputs/demo_curriculum (curriculum)")
    d.add_argument("--smoke", action="store_true", help="a short run (CI)")
    d.add_argument("--seed", type=int, default=None, help="the run's seed (default: the recipe's, whose figures "
                   "the README and docs give)")
    d.add_argument("--recipe", choices=("counting", "curriculum", "racro", "visrl"), default="counting",
                   help="counting: SFT warm-up then GRPO; curriculum: Curr-ReFT's judge -> choice -> open stages; "
                        "racro: a captioner trained by a frozen text reasoner's answers (default outputs/demo_racro); "
                        "visrl: focus-box trajectories, offline DPO vs online GRPO (default outputs/demo_visrl)")
    d.set_defaults(fn=cmd_demo)

    for name, fn, text in (
            ("visrl-generate", cmd_visrl_generate, "VisRL preference pairs: K attempts x 2 two-turn trajectories per "
                                                  "Visual-CoT item, judged and filtered (0.8 / 0.2)"),
            ("dpo", cmd_dpo, "step-level DPO on VisRL pairs (stage 1: box step; stage 2: 0.5 box + 0.5 answer)"),
            ("visrl-online", cmd_visrl_online, "GRPO over two-turn focus trajectories (a GRPO recipe with a focus: "
                                               "section)")):
        v = sub.add_parser(name, help=text)
        v.add_argument("--config", required=True, help="YAML recipe (configs/visrl_*.yaml)")
        v.add_argument("overrides", nargs="*", help="key=value overrides (visrl-online: focus.<key>=value too)")
        v.set_defaults(fn=fn)

    rc = sub.add_parser("racro-eval", help="RACRO inference: the VLM's tentative answer (qa.jsonl) and query-conditioned "
                                           "caption (caption.jsonl), a text reasoner's boxed answer (reason.jsonl); "
                                           "each step re-runnable alone (--steps reason with another reasoner)")
    rc.add_argument("--data", required=True, help="ViRL39K parquet, or JSONL of {id, images, question, answer}")
    rc.add_argument("--output_dir", required=True)
    rc.add_argument("--image_root", help="folder image paths are relative to (default: the data file's)")
    rc.add_argument("--steps", nargs="+", choices=("qa", "caption", "reason"), default=["qa", "caption", "reason"])
    rc.add_argument("--vlm_path", help="captioner checkpoint (steps qa, caption)")
    rc.add_argument("--reasoner_path", help="text-only reasoner checkpoint, run in-process (step reason)")
    rc.add_argument("--reasoner_url", help="or an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    rc.add_argument("--reasoner_model", help="model name sent to the server")
    rc.add_argument("--reasoner_temperature", type=float, default=0.6, help="RACRO: 0.6")
    rc.add_argument("--reasoner_top_p", type=float, default=0.95, help="RACRO: 0.95")
    rc.add_argument("--reasoner_max_tokens", type=int, default=8192, help="RACRO: 8192")
    rc.add_argument("--max_new_tokens", type=int, default=8192, help="VLM budget per answer / caption (RACRO: 8192)")
    rc.add_argument("--batch_size", type=int, default=8)
    rc.add_argument("--limit", type=int, help="first N rows only")
    rc.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    rc.add_argument("--seed", type=int, default=0)
    rc.set_defaults(fn=cmd_racro_eval)

    dr = sub.add_parser("doctor", help="check this machine: build, CPU, kernels; on GPU kernel parity, a GRPO step, "
                                       "memory (writes doctor_report.json)")
    from paddlemix_r1.doctor import add_arguments as add_doctor_arguments

    add_doctor_arguments(dr)
    dr.set_defaults(fn=cmd_doctor)

    sv = sub.add_parser("serve", help="serve a checkpoint: OpenAI-compatible POST /v1/chat/completions with images, "
                                      "concurrent requests batched into one generate call (docs/serve.md)")
    sv.add_argument("--model_path", required=True, help="checkpoint dir")
    sv.add_argument("--served_model_name", help="model id clients send (default: the dir's base name)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    sv.add_argument("--max_batch_size", type=int, default=8, help="completion rows (prompts x n) per generate call")
    sv.add_argument("--batch_window_ms", type=float, default=5.0, help="wait for more requests to join a batch")
    sv.add_argument("--max_new_tokens", type=int, default=256, help="completion length when a request sets none")
    sv.add_argument("--max_model_len", type=int, help="prompt + completion tokens (default: the checkpoint's)")
    sv.add_argument("--max_images", type=int, default=4, help="images per request")
    sv.add_argument("--allowed_root", help="folder local image paths may come from (default: none, data URLs only)")
    sv.add_argument("--api_key", help="require Authorization: Bearer <key> on /v1 routes")
    sv.add_argument("--max_request_bytes", type=int, default=32 << 20)
    sv.add_argument("--max_pending", type=int, default=256, help="queued requests before 503s")
    sv.add_argument("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    sv.set_defaults(fn=cmd_serve)

    t = sub.add_parser("tiny-checkpoint", help="build a tiny random checkpoint (no downloads)")
    t.add_argument("--out", required=True)
    t.add_argument("--family", default="qwen2_5_vl", choices=VISION_FAMILIES)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=cmd_tiny_checkpoint)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from paddlemix_r1 import configure_runtime

    configure_runtime()  # before the subcommand imports paddle: MKL reads its variables when Paddle loads
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
