"""``langrl train | generate | eval | report | export | config show|schema | list | env``."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from langrl.errors import LangrlError


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.default is None or action.default is False
                or action.default == [] or action.default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def add_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, formatter_class=HelpWithDefaults, help=help)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langrl", formatter_class=HelpWithDefaults,
                                     description="Reinforcement learning with language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = add_command(sub, "train", help="train as a YAML config says; its 'kind' (lm, agent, tabular, dqn, offline) "
                                "picks the loop (langrl list shows them)")
    train.add_argument("config", help="YAML config, e.g. configs/positive_sentiment.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key, e.g. --set steps=3 --set kl.coef=0.1 (repeatable)")
    train.add_argument("--output", help="run folder (default: runs/<config name>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the "
                                                             "run folder (default: the newest run)")
    train.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: accept --set overrides that change the run's saved config beyond "
                            "what is safe mid-run (the change and its step are recorded in config_changes.jsonl)")
    train.add_argument("--smoke", action="store_true", help="shrink the config to a run of seconds (the kind's "
                                                            "smoke overrides, before --set): checks a config works")

    gen = add_command(sub, "generate", help="sample completions from a model")
    gen.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, hub id or folder")
    gen.add_argument("--prompt", required=True, action="append", help="prompt text (repeatable)")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="completion length cap, >= 1")
    gen.add_argument("--temperature", type=float, default=0.7, help="softmax temperature, >= 0; 0: greedy")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in [0, 1]; 1 disables it")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 disables it")
    gen.add_argument("--n", type=int, default=1, help="completions per prompt")
    gen.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the chat template")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")

    ev = add_command(sub, "eval", help="measure a model on a config's task, as JSON (lm: "
                        "mean reward and KL; agent, tabular, dqn: mean return and success rate)")
    ev.add_argument("config", help="YAML config giving the task")
    ev.add_argument("--model", required=True, help="the policy: a run folder, a checkpoint folder, an embedded "
                                                   "name or a hub id (dialogue: `expert`, the environment's "
                                                   "expert policy where it has one)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key (repeatable)")
    ev.add_argument("--num-prompts", type=int, default=16, help="lm runs: how many of the config's prompts")
    ev.add_argument("--episodes", type=int, help="runs in an environment: held-out episodes (default: the "
                                                 "config's eval.episodes)")

    report = add_command(sub, "report", help="(re)write report.png and report.md of a run")
    report.add_argument("run_dir", help="the run folder")

    export = add_command(sub, "export", help="write a trained model as a standalone Hugging Face folder with a "
                                             "model card (and push it to the Hub)")
    export.add_argument("source", help="a run folder (its newest intact checkpoint) or a checkpoint folder")
    export.add_argument("out", help="the new folder to write (must not exist, or be empty)")
    export.add_argument("--merge-lora", action="store_true", help="merge a LoRA adapter into the base: plain "
                                                                  "transformers weights, no peft needed")
    export.add_argument("--push-to-hub", metavar="USER/NAME", help="then upload the folder to this Hub repo")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")

    config = add_command(sub, "config", help="show a resolved config or a kind's schema")
    what = config.add_subparsers(dest="config_command", required=True)
    show = add_command(what, "show", help="the config after defaults and --set, each key "
                                                              "with its description")
    show.add_argument("config", help="YAML config")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override any config key (repeatable)")
    schema = add_command(what, "schema", help="the JSON schema of a kind of config")
    schema.add_argument("kind", nargs="?", default="lm", help="lm, agent, tabular, dqn or offline")

    add_command(sub, "list", help="the kinds of run, algorithms, rewards, environments and "
                                                      "bundled configs")
    add_command(sub, "env", help="versions, device and threads: what to paste into a bug "
                                                     "report")
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
    except BrokenPipeError:  # the reader of our output went away (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint can be continued with --resume", file=sys.stderr)
        return 130


USER_OS_ERRORS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT)


def quiet_library_progress_bars() -> None:
    """transformers draws a bar for every weight load and save, datasets one for every split it prepares;
    the CLI shows only its own."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cmd_train(args: argparse.Namespace) -> int:
    from langrl.api import train

    overrides = [*smoke_overrides(args.config), *args.overrides] if args.smoke else args.overrides
    started = time.monotonic()
    result = train(args.config, output=args.output, resume=args.resume, overrides=overrides,
                   allow_config_change=args.allow_config_change)
    s = result.summary
    print(f"\nrun folder: {result.run_dir}")
    if "headline" in s:  # runs that say what matters in their own words
        for line in s["headline"]:
            print(line)
    elif "phases" in s:  # an agent run
        for phase, r in s["phases"].items():
            print(f"{phase}: success rate {fmt(r['success_rate'])}, mean return {fmt(r['mean_return'])} "
                  f"at {int(r['env_steps'])} env steps")
    else:
        for line in lm_headline(s):
            print(line)
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    print(f"wall time: {minutes} min {seconds:02d} s (models loaded, trained, evaluated, reported)")
    print(f"report: {result.run_dir / 'report.md'}")
    return 0


def lm_headline(s: dict[str, Any]) -> list[str]:
    """What an LM run did, in two or three lines: training reward and KL, then the evaluation before/after."""
    first, last = s["reward_first10"], s["reward_last10"]
    gain = f" ({last - first:+.3f})" if first is not None and last is not None else ""
    lines = [f"training prompts: reward {fmt(first)} (first 10 steps) -> {fmt(last)} (last 10){gain}; "
             f"kl/ref {fmt(s['kl_last10'])} nats (last 10); {fmt(s['step_s_median'])} s/step"]
    if s.get("eval_prompts"):
        which = "held-out" if s["eval_held_out"] else "evaluation"
        before, after = s["eval_reward_before"], s["eval_reward_after"]
        gain = f" ({after - before:+.3f})" if before is not None and after is not None else ""
        line = (f"{s['eval_prompts']} {which} prompts x {s['eval_samples']}: reward {fmt(before)} before -> "
                f"{fmt(after)} after{gain}")
        if s.get("eval_kl_after") is not None:
            line += f", kl/ref {fmt(s['eval_kl_after'])} nats"
        if s.get("best_of_n_at_kl") is not None:
            line += f"; best-of-n at that KL: {fmt(s['best_of_n_at_kl'])}"
        if s.get("eval_gain_per_sqrt_nat") is not None and s.get("eval_optimum_per_sqrt_nat") is not None:
            line += (f"; reward per sqrt(nat) {fmt(s['eval_gain_per_sqrt_nat'])}, the KL-optimal tilt "
                     f"{fmt(s['eval_optimum_per_sqrt_nat'])}")
        lines.append(line)
    return lines


def smoke_overrides(config: str) -> list[str]:
    """The ``--smoke`` overrides of the config's kind."""
    from langrl.config import KINDS, config_kind, read_config_data

    return list(KINDS[config_kind(read_config_data(config)[0])].smoke)


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from langrl.envs.prompts import PromptSet, encode
    from langrl.lm.collect import rollout_prompts
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


def cmd_export(args: argparse.Namespace) -> int:
    from langrl.export import export_run

    print(export_run(args.source, args.out, merge_lora=args.merge_lora, push_to_hub=args.push_to_hub,
                     private=args.private))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from langrl.config import KINDS, load_any_config
    from langrl.config.describe import schema, show

    if args.config_command == "show":
        print(show(load_any_config(args.config, args.overrides)))
        return 0
    if args.kind not in KINDS:
        from langrl.errors import ConfigError

        raise ConfigError(f"kind = {args.kind!r}: unknown kind of run; allowed: {', '.join(KINDS)}")
    print(json.dumps(schema(args.kind), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from langrl.inventory import inventory

    for title, items in inventory().items():
        print(f"{title}:")
        for name, note in items:
            print(f"  {name:<34} {note}" if note else f"  {name}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from langrl.inventory import environment

    for key, value in environment().items():
        print(f"{key}: {value}")
    return 0


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval, "report": cmd_report,
            "export": cmd_export, "config": cmd_config, "list": cmd_list, "env": cmd_env}

if __name__ == "__main__":
    sys.exit(main())
