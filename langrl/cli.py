"""``langrl train | generate | eval | report``."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from langrl.errors import LangrlError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langrl",
                                     description="Reinforcement learning with language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a policy as a YAML config says (a config with an "
                                         "'env' section trains an LM agent in that environment)")
    train.add_argument("config", help="YAML config, e.g. configs/positive_sentiment.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key, e.g. --set steps=3 --set kl.coef=0.1 (repeatable)")
    train.add_argument("--output", help="run folder (default: runs/<config name>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the "
                                                             "run folder (default: the newest run)")
    train.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: accept --set overrides that change the run's saved config beyond "
                            "what is safe mid-run (the change and its step are recorded in config_changes.jsonl)")

    gen = sub.add_parser("generate", help="sample completions from a model")
    gen.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, hub id or folder")
    gen.add_argument("--prompt", required=True, action="append", help="prompt text (repeatable)")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="completion length cap, >= 1")
    gen.add_argument("--temperature", type=float, default=0.7, help="softmax temperature, >= 0; 0: greedy")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in [0, 1]; 1 disables it")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 disables it")
    gen.add_argument("--n", type=int, default=1, help="completions per prompt")
    gen.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the chat template")
    gen.add_argument("--seed", type=int, default=0)

    ev = sub.add_parser("eval", help="mean reward and KL to the reference of a model, as JSON")
    ev.add_argument("config", help="YAML config giving the task (prompts, reward, sampling, reference)")
    ev.add_argument("--model", required=True, help="the policy: a checkpoint folder, embedded name or hub id")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--num-prompts", type=int, default=16, help="how many of the config's prompts")
    ev.add_argument("--episodes", type=int, help="agent configs (with 'env'): held-out episodes (default: "
                                                 "the config's eval.episodes); MODEL may be a run folder")

    report = sub.add_parser("report", help="(re)write report.png and report.md of a run folder")
    report.add_argument("run_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="langrl: %(levelname)s: %(message)s", level=logging.WARNING)
    quiet_library_progress_bars()
    try:
        return COMMANDS[args.command](args)
    except LangrlError as e:
        print(f"langrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            raise
        # A full disk or a read-only folder while logging: files are written atomically, nothing is lost.
        print(f"langrl {args.command}: error: {e.strerror}: {e.filename!r}; free space or fix the "
              f"permissions, then run again (with --resume for train)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint can be continued with --resume", file=sys.stderr)
        return 130


USER_OS_ERRORS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT)


def quiet_library_progress_bars() -> None:
    """transformers draws a bar for every weight load and save; the CLI shows only its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cmd_train(args: argparse.Namespace) -> int:
    from langrl.api import train

    result = train(args.config, output=args.output, resume=args.resume, overrides=args.overrides,
                   allow_config_change=args.allow_config_change)
    s = result.summary
    print(f"\nrun folder: {result.run_dir}")
    if "phases" in s:  # an agent run
        for phase, r in s["phases"].items():
            print(f"{phase}: success rate {fmt(r['success_rate'])}, mean return {fmt(r['mean_return'])} "
                  f"at {int(r['env_steps'])} env steps")
    else:
        print(f"reward: first-10 mean {fmt(s['reward_first10'])}, last-10 mean {fmt(s['reward_last10'])}; "
              f"final kl/ref {fmt(s['kl_final'])} nats; {fmt(s['step_s_median'])} s/step")
    print(f"report: {result.run_dir / 'report.md'}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from langrl.envs.prompts import PromptSet, encode
    from langrl.lm.trainer import rollout_prompts
    from langrl.models import load_lm
    from langrl.rollout import SamplingConfig

    check_generate_args(args)
    lm = load_lm(args.model)
    ids = encode(args.prompt, lm.tokenizer, not args.no_chat)
    if not all(ids):
        from langrl.errors import ConfigError

        empty = args.prompt[[len(row) for row in ids].index(0)]
        hint = " (or drop --no-chat: the chat template adds tokens)" if args.no_chat else ""
        raise ConfigError(f"--prompt {empty!r} encodes to no tokens; give some text{hint}")
    prompts = PromptSet(texts=args.prompt, ids=ids, per_step=len(args.prompt), seed=args.seed)
    if args.temperature == 0:  # greedy: keep only the most likely token (top-k 1) and sample from it
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=1,
                                  group_size=args.n)
    else:
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, top_k=args.top_k, group_size=args.n)
    generator = torch.Generator(device=next(lm.model.parameters()).device).manual_seed(args.seed)
    _, texts, completions = rollout_prompts(lm.model, lm.tokenizer, prompts, list(range(len(args.prompt))),
                                            sampling, generator)
    for text, completion in zip(texts, completions, strict=True):
        print(json.dumps({"prompt": text, "completion": completion}, ensure_ascii=False))
    return 0


def check_generate_args(args: argparse.Namespace) -> None:
    """One clear error for a sampling flag that cannot work, before the model is loaded."""
    from langrl.errors import ConfigError

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens = {args.max_new_tokens}: must be at least 1")
    if args.n < 1:
        raise ConfigError(f"--n = {args.n}: completions per prompt must be at least 1")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise ConfigError(f"--temperature = {args.temperature}: must be a finite number >= 0 "
                          f"(0 is greedy decoding, 1 samples from the model's distribution)")
    if not 0 <= args.top_p <= 1:
        raise ConfigError(f"--top-p = {args.top_p}: must be in [0, 1] (1 disables the nucleus filter, "
                          f"0 keeps only the most likely token)")
    if args.top_k < 0:
        raise ConfigError(f"--top-k = {args.top_k}: must be >= 0 (0 disables the top-k filter)")


def cmd_eval(args: argparse.Namespace) -> int:
    from langrl.eval import evaluate

    result = evaluate(args.config, args.model, args.overrides, num_prompts=args.num_prompts,
                      episodes=args.episodes)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from langrl.report import write_report

    print(write_report(Path(args.run_dir)))
    return 0


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval, "report": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
