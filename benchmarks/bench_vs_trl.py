"""langrl GRPO vs TRL GRPOTrainer: the same work, side by side, in one run.

Both sides train the same model (the embedded SmolLM2-135M-Instruct unless ``--model``), on the same
prompts in the same order (langrl's seeded prompt order, handed to TRL as an unshuffled dataset), with
the same group size, completion length, sampling settings (temperature 1, no top-k/top-p), learning rate
and linear decay, AdamW, gradient clipping at 1, beta (k3 KL in the loss), per-group reward scaling,
token-mean loss (TRL's default ``dapo``; langrl ``token_mean``), one inner epoch and one micro-batch.
Each side keeps its own optimizer implementation (TRL's default: fused AdamW).
float32 on CPU; bfloat16 weights on both sides on a GPU. TRL runs without gradient checkpointing (its
default turns it on, which recomputes the forward: more work, less memory), so both do the same passes.

Each (configuration, seed, side) runs in its own subprocess, so its peak resident memory
(``ru_maxrss``, whole process: imports, model, reference, optimizer, activations) is its own. Sides
alternate which goes first from seed to seed. Per side it prints the steady-state seconds per step
(median over the steps after ``--warmup``), completions per second, peak RSS and the mean reward of
the last steps; then the ratios langrl/TRL.

    python benchmarks/bench_vs_trl.py --quick                       # default + LoRA, 1 seed (~6 min CPU)
    python benchmarks/bench_vs_trl.py --seeds 3 --json bench.json   # + the larger group, 3 seeds

TRL is a benchmark-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

TEMPLATE = "Write one sentence about {item}."
TOPICS = "topics.txt"  # bundled with langrl


@dataclass(frozen=True)
class Setup:
    """One configuration, identical on both sides."""

    name: str
    prompts: int  # prompts per step (P)
    group: int  # completions per prompt (G)
    max_tokens: int = 32
    lr: float = 5e-6
    beta: float = 0.04
    lora_r: int = 0  # 0: full fine-tune
    steps: int = 12
    warmup: int = 2
    seed: int = 0
    model: str = "smollm2-135m-instruct"

    @property
    def completions(self) -> int:
        return self.prompts * self.group


CONFIGS = {
    "default": Setup("default", prompts=2, group=4),
    "lora": Setup("lora", prompts=2, group=4, lr=1e-4, lora_r=16),
    "large": Setup("large", prompts=4, group=8),
}


# ----------------------------------------------------------------------------------------- workers


def device_and_dtype() -> tuple[str, str]:
    import torch

    return ("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32")


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on a GPU, peak allocated device memory."""
    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def langrl_config(setup: Setup) -> dict[str, Any]:
    device, dtype = device_and_dtype()
    return {
        "model": setup.model, "algorithm": "grpo", "steps": setup.steps, "seed": setup.seed,
        "device": device, "dtype": dtype,
        "prompts": {"file": TOPICS, "template": TEMPLATE, "per_step": setup.prompts, "eval_count": 0},
        "sampling": {"max_new_tokens": setup.max_tokens, "temperature": 1.0, "group_size": setup.group},
        "reward": {"type": "vader"},
        "kl": {"coef": setup.beta, "estimator": "k3", "mode": "loss"},
        "lora": {"r": setup.lora_r, "alpha": 2 * setup.lora_r, "target_modules": "all-linear"}
        if setup.lora_r else None,
        "optim": {"lr": setup.lr, "schedule": "linear", "warmup_steps": 0, "max_grad_norm": 1.0},
        "train": {"epochs": 1, "micro_batch_size": setup.completions, "loss_aggregation": "token_mean",
                  "scale_rewards": True},
        "log": {"progress": False, "tensorboard": False},
    }


def run_langrl(setup: Setup) -> dict[str, Any]:
    from langrl.config import load_config
    from langrl.lm.trainer import build_run, run_step

    run = build_run(load_config(langrl_config(setup)))
    times, cpu, rewards = [], [], []
    for step in range(1, setup.steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        metrics = run_step(run, step)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        rewards.append(metrics["reward/mean"])
        progress("langrl", setup, step, times[-1], rewards[-1])
    return {"step_s": times, "cpu_s": cpu, "reward": rewards}


def run_trl(setup: Setup) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from langrl.config import load_config
    from langrl.envs.prompts import build_prompts
    from langrl.models import load_lm
    from langrl.rewards import build_reward, score

    device, dtype = device_and_dtype()
    cfg = load_config(langrl_config(setup))
    lm = load_lm(setup.model, dtype=dtype, device=device)
    # langrl's prompts, in langrl's order for these steps: TRL reads them unshuffled, G times each.
    prompts = build_prompts(cfg.prompts, lm.tokenizer, setup.seed)
    order = [i for step in range(setup.steps) for i in prompts.for_step(step)]
    texts = render_items(cfg)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": texts[i]}]} for i in order])
    vader = build_reward(cfg.reward)

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return score(vader, [str(p) for p in prompts], [c[0]["content"] for c in completions])

    reward.__name__ = "vader"
    times: list[float] = []
    cpu: list[float] = []
    rewards: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # before generation (in training_step)
            self.start, self.start_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):  # after the optimizer step
            times.append(time.perf_counter() - self.start)
            cpu.append(time.process_time() - self.start_cpu)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))
                progress("trl", setup, len(rewards), times[-1], rewards[-1])

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), max_steps=setup.steps, seed=setup.seed,
        per_device_train_batch_size=setup.completions, gradient_accumulation_steps=1,
        num_generations=setup.group, max_completion_length=setup.max_tokens,
        temperature=1.0, top_p=1.0, top_k=0, beta=setup.beta, num_iterations=1, loss_type="dapo",
        scale_rewards="group", learning_rate=setup.lr, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, shuffle_dataset=False,
        gradient_checkpointing=False, bf16=device == "cuda", use_cpu=device == "cpu",
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft = LoraConfig(r=setup.lora_r, lora_alpha=2 * setup.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM") if setup.lora_r else None
    trainer = GRPOTrainer(model=lm.model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=lm.tokenizer, peft_config=peft, callbacks=[Clock()])
    torch.manual_seed(setup.seed)
    trainer.train()
    return {"step_s": times, "cpu_s": cpu, "reward": rewards}


def render_items(cfg: Any) -> list[str]:
    from langrl.envs.prompts import read_items, render

    return render(read_items(cfg.prompts), cfg.prompts.template)


def progress(side: str, setup: Setup, step: int, seconds: float, reward: float) -> None:
    print(f"  [{setup.name} seed {setup.seed}] {side:6s} step {step:3d}/{setup.steps}: {seconds:6.2f} s, "
          f"reward {reward:+.3f}", file=sys.stderr, flush=True)


def worker(side: str, setup: Setup, out: Path) -> None:
    """Run one side in this process and write its raw figures to ``out``."""
    import torch

    load_before = os.getloadavg()[0]
    result = (run_trl if side == "trl" else run_langrl)(setup)
    result.update(peak_memory(), side=side, setup=asdict(setup), threads=torch.get_num_threads(),
                  load_average=[load_before, os.getloadavg()[0]])
    out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------ parent


def run_side(side: str, setup: Setup, threads: int | None) -> dict[str, Any]:
    """One side of one (configuration, seed) in a fresh subprocess; its raw figures."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        cmd = [sys.executable, __file__, "--worker", side, "--setup", json.dumps(asdict(setup)),
               "--out", str(out)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "PYTHONWARNINGS": "ignore::FutureWarning"}
        if threads:  # else torch's default: one thread per physical core
            env["OMP_NUM_THREADS"] = str(threads)
        # Progress goes to stderr; stdout (TRL prints its log dicts there) is dropped.
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def summarise(raw: list[dict[str, Any]], setup: Setup) -> dict[str, Any]:
    """Figures of one side over its seeds: steady-state step time, throughput, memory, rewards."""
    steady = [t for r in raw for t in r["step_s"][setup.warmup:]]
    step_s = statistics.median(steady)
    last = max(1, (setup.steps - setup.warmup) // 2)
    final = [statistics.fmean(r["reward"][-last:]) for r in raw]
    first = [statistics.fmean(r["reward"][:last]) for r in raw]
    return {
        "step_s_median": step_s,
        "completions_per_s": setup.completions / step_s,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in raw),
        **({"peak_gpu_mib": max(r["peak_gpu_mib"] for r in raw)} if "peak_gpu_mib" in raw[0] else {}),
        "reward_first_steps": statistics.fmean(first),
        "reward_last_steps": statistics.fmean(final),
        "reward_last_steps_per_seed": final,
        "reward_last_steps_sem": statistics.stdev(final) / len(final) ** 0.5 if len(final) > 1 else None,
        "last_steps": last,
        "seeds": len(raw),
        "threads": raw[0]["threads"],
        "step_s_per_seed": [statistics.median(r["step_s"][setup.warmup:]) for r in raw],
        "cpu_s_median": statistics.median([t for r in raw for t in r["cpu_s"][setup.warmup:]]),
        "load_average": [r["load_average"] for r in raw],
        "raw": [{"step_s": r["step_s"], "cpu_s": r["cpu_s"], "reward": r["reward"]} for r in raw],
    }


def compare(setup: Setup, seeds: int, threads: int | None) -> dict[str, Any]:
    """Both sides over ``seeds`` seeds, alternating which goes first."""
    raw: dict[str, list[dict[str, Any]]] = {"trl": [], "langrl": []}
    for seed in range(seeds):
        for side in (("trl", "langrl") if seed % 2 == 0 else ("langrl", "trl")):
            print(f"{setup.name}: {side}, seed {seed} ...", file=sys.stderr, flush=True)
            raw[side].append(run_side(side, replace(setup, seed=seed), threads))
    trl, ours = summarise(raw["trl"], setup), summarise(raw["langrl"], setup)
    return {
        "setup": asdict(setup), "trl": trl, "langrl": ours,
        "throughput_ratio": ours["completions_per_s"] / trl["completions_per_s"],
        "step_time_ratio": ours["step_s_median"] / trl["step_s_median"],
        "cpu_time_ratio": ours["cpu_s_median"] / trl["cpu_s_median"],
        "memory_ratio": ours["peak_rss_mib"] / trl["peak_rss_mib"],
        **({"gpu_memory_ratio": ours["peak_gpu_mib"] / trl["peak_gpu_mib"]} if "peak_gpu_mib" in trl else {}),
        "reward_last_difference": ours["reward_last_steps"] - trl["reward_last_steps"],
    }


def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    import langrl

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "langrl": getattr(langrl, "__version__", "?")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = (f"{'config':10s} {'side':7s} {'s/step':>8s} {'CPU s/step':>10s} {'compl/s':>8s} "
            f"{'peak RSS MiB':>13s} {'reward last':>12s}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        for side in ("trl", "langrl"):
            s = r[side]
            sem = f"±{s['reward_last_steps_sem']:.3f}" if s["reward_last_steps_sem"] is not None else ""
            print(f"{name:10s} {side:7s} {s['step_s_median']:8.2f} {s['cpu_s_median']:10.2f} "
                  f"{s['completions_per_s']:8.2f} "
                  f"{s['peak_rss_mib']:13.0f} {s['reward_last_steps']:+8.3f}{sem}")
    print()
    print(f"{'config':10s} {'throughput langrl/TRL':>22s} {'CPU s/step TRL/langrl':>22s} "
          f"{'memory langrl/TRL':>18s} {'reward diff':>12s}")
    for name, r in results.items():
        print(f"{name:10s} {r['throughput_ratio']:21.2f}x {1 / r['cpu_time_ratio']:21.2f}x "
              f"{r['memory_ratio']:17.2f}x {r['reward_last_difference']:+12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="default and lora, 1 seed, 8 steps")
    parser.add_argument("--configs", default="default,lora,large", help=f"comma list of {list(CONFIGS)}")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the setup's)")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the median")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on both sides "
                        "(default: torch's, one per physical core)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--worker", choices=["trl", "langrl"], help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Setup(**json.loads(args.setup)), args.out)
        return
    names = ["default", "lora"] if args.quick else args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    overrides = {k: v for k, v in {"steps": args.steps or (8 if args.quick else None), "warmup": args.warmup,
                                   "model": args.model}.items() if v is not None}
    started = time.perf_counter()
    results = {name: compare(replace(CONFIGS[name], **overrides), args.seeds, args.threads) for name in names}
    info = machine()
    print(f"\nlangrl GRPO vs TRL {info['trl']} GRPOTrainer on {info.get('gpu', info['cpu'])} "
          f"({info['cpus']} CPUs), {args.seeds} seed(s), {time.perf_counter() - started:.0f} s in all\n")
    print_table(results)
    busy = max(load for r in results.values() for side in ("trl", "langrl")
               for pair in r[side]["load_average"] for load in pair)
    if busy > (os.cpu_count() or 1) + 1:  # this benchmark alone keeps it near the CPU count
        print(f"\nwarning: 1-minute load average reached {busy:.1f} on {os.cpu_count()} CPUs: other work "
              "was running, so the seconds above are inflated and the ratios less certain")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": " ".join(sys.argv),
                                         "configs": results}, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
