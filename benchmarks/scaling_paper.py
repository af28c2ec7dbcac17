"""On paper: what langrl's distributed design moves and spends per step at 8 and 64 GPUs.

Pure arithmetic, no GPU and no model download: parameter and LoRA counts from each model's shapes, the
bytes of one weight publish (`langrl.lm.collect.sampling_state`) and of one step's returned samples
(`ShardResult`), the gradient all-reduce of data-parallel learners, and those bytes turned into seconds
at the link speeds, GPU figures and copy rates of :data:`ASSUMPTIONS` (assumptions, not measurements:
edit them to fit your machines). Every figure of docs/scaling.md comes from here.

    python benchmarks/scaling_paper.py                            # the tables, in Markdown
    python benchmarks/scaling_paper.py --prompts 128 --group 4    # another workload
    python benchmarks/scaling_paper.py --verify-doc               # docs/scaling.md quotes today's tables
    python benchmarks/scaling_paper.py --count-with-transformers  # counts = transformers + PEFT's (meta device)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GB, MB = 1e9, 1e6  # decimal units throughout, as link speeds are quoted


@dataclass(frozen=True)
class Model:
    """A Llama-shaped decoder: attention q, k, v, o and a gated MLP gate, up, down in every layer, no biases."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool  # input embedding and LM head share one matrix

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of the seven projections of one layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def params(self) -> int:
        """Embedding (twice when untied) + layers (projections and two RMSNorms) + the final RMSNorm."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        layer = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden
        return embeddings + self.layers * layer + self.hidden

    def lora_params(self, r: int) -> int:
        """LoRA on all seven projections: A (r x in) and B (out x r) per projection per layer."""
        return self.layers * sum(r * (a + b) for a, b in self.linears().values())

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """The KV cache one token adds: keys and values of every layer."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def activation_bytes(self, rows: int, seq: int) -> float:
        """Activations a forward keeps for the backward in 16-bit, no recomputation (langrl has no gradient
        checkpointing): s b h (34 + 5 a s / h) per layer (Korthikanti et al. 2022, eq. 1), an estimate."""
        per_layer = seq * rows * self.hidden * (34 + 5 * self.heads * seq / self.hidden)
        return self.layers * per_layer


MODELS = [
    Model("SmolLM2-135M", hidden=576, layers=30, intermediate=1536, vocab=49152, heads=9, kv_heads=3, tied=True),
    Model("SmolLM2-1.7B", hidden=2048, layers=24, intermediate=8192, vocab=49152, heads=32, kv_heads=32,
          tied=True),
    Model("Llama-2-7B-like", hidden=4096, layers=32, intermediate=11008, vocab=32000, heads=32, kv_heads=32,
          tied=False),
]
LORA_R = 16


@dataclass(frozen=True)
class Workload:
    prompts: int = 64  # prompts per step (P)
    group: int = 8  # completions per prompt (G)
    prompt_tokens: int = 128  # Tp, after left padding
    completion_tokens: int = 256  # Tc, every completion runs to the cap (the worst case)
    micro_batch: int = 16  # train.micro_batch_size's default: rows per forward/backward

    @property
    def rows(self) -> int:
        return self.prompts * self.group

    @property
    def tokens(self) -> int:
        return self.rows * (self.prompt_tokens + self.completion_tokens)


# ------------------------------------------------------------------------------------------ assumptions
ASSUMPTIONS = {
    "10 GbE": 1.25 * GB,  # bytes/s between nodes, line rate
    "100 Gb IB": 12.5 * GB,  # bytes/s between nodes, line rate (Ray's object transfer is TCP: IPoIB, below it)
    "nvlink": 300 * GB,  # bytes/s per GPU, all-reduce bus bandwidth inside a node
    "host_copy": 10 * GB,  # bytes/s of one copy GPU -> host, host -> object store or host -> GPU (pageable)
    "hbm": 3.35e12,  # bytes/s of GPU memory (H100 SXM; H200: 4.8e12)
    "bf16_flops": 989e12,  # dense bf16 FLOP/s (H100 SXM)
    "mfu": 0.4,  # the fraction of it the learner's forward/backward and the prefill reach
    "gpu_memory": 80 * GB,  # H100 80 GB (H200: 141 GB)
    "eager_s_per_layer": 0.25e-3,  # launch-bound seconds per layer of one eager decode step (no CUDA graphs)
    "gpus_per_node": 8,
    "text_bytes_per_token": 4,  # UTF-8 bytes per token of English text, for the returned strings
}
LINKS = ("10 GbE", "100 Gb IB")
GPU_COUNTS = (8, 64)


def a(key: str) -> float:
    return ASSUMPTIONS[key]


# ------------------------------------------------------------------------------------------------ bytes
def publish_bytes(model: Model, weights: str) -> float:
    """One `sampling_state`: every trainable parameter in its dtype. PEFT keeps LoRA adapters in float32
    even on a bf16 base (SmolLM2-135M, r=16: 4,884,480 float32 parameters). GRPO: no value head."""
    if weights == "LoRA":
        return 4.0 * model.lora_params(LORA_R)
    return {"full bf16": 2.0, "full fp32": 4.0}[weights] * model.params


def sample_bytes_per_row(w: Workload, values: bool) -> float:
    """One completion as a shard returns it: prompt ids and mask, completion ids and mask (all int64),
    float32 log-probs (and values with a value head), the prompt and completion texts, a float reward."""
    ids_and_masks = 8 * 2 * (w.prompt_tokens + w.completion_tokens)
    floats = 4 * w.completion_tokens * (2 if values else 1)
    texts = a("text_bytes_per_token") * (w.prompt_tokens + w.completion_tokens)
    return ids_and_masks + floats + texts + 8


def grad_bytes(model: Model, weights: str) -> float:
    """Gradients live in the parameters' dtype; the LoRA adapter's are float32."""
    return publish_bytes(model, weights)


# --------------------------------------------------------------------------------------------- seconds
def generation_s(model: Model, w: Workload, rows: int, floor: bool = True) -> float:
    """Sampling ``rows`` completions on one GPU: the prefill at MFU, then Tc decode steps, each as slow as
    the slowest of reading the bf16 weights and the rows' KV cache (at the mean length Tp + Tc/2) from GPU
    memory, 2 x params FLOPs per row at MFU, and (``floor``) the launch-bound latency of an eager forward.
    Without the floor it is a roofline lower bound."""
    flops = a("bf16_flops") * a("mfu")
    prefill = 2 * model.params * rows * w.prompt_tokens / flops
    kv = rows * (w.prompt_tokens + w.completion_tokens / 2) * model.kv_bytes_per_token()
    step = max((2 * model.params + kv) / a("hbm"), 2 * model.params * rows / flops,
               model.layers * a("eager_s_per_layer") if floor else 0.0)
    return prefill + w.completion_tokens * step


def learner_s(model: Model, weights: str, tokens: int) -> float:
    """The reference forward (2 x params FLOPs a token) and the policy's forward and backward (6; LoRA: 4,
    no gradient for the frozen base) over ``tokens``, one inner epoch, at MFU."""
    per_token = 2 + (4 if weights == "LoRA" else 6)
    return per_token * model.params * tokens / (a("bf16_flops") * a("mfu"))


def shard_rows(w: Workload, shards: int) -> int:
    """Rows of the largest shard: shards cut the step's prompts (`shard_indices`), each prompt's G
    completions stay together, and the slowest shard sets the step's rollout time."""
    return math.ceil(w.prompts / shards) * w.group


def nodes(gpus: int) -> int:
    return math.ceil(gpus / a("gpus_per_node"))


@dataclass
class Publish:
    """One weight publish from the learner to every rollout worker, in seconds (bytes: head egress)."""

    egress: float  # bytes leaving the head node when every other node pulls from it (Ray's default)
    host: float  # GPU -> host, host -> object store, host -> each worker's GPU
    star: dict[str, float]  # network seconds, every node pulling from the head
    tree: dict[str, float]  # network seconds of a binary-tree broadcast (not what langrl does)


def publish(model: Model, weights: str, gpus: int) -> Publish:
    size, others = publish_bytes(model, weights), nodes(gpus) - 1
    rounds = math.ceil(math.log2(nodes(gpus))) if nodes(gpus) > 1 else 0
    return Publish(egress=others * size, host=3 * size / a("host_copy"),
                   star={link: others * size / a(link) for link in LINKS},
                   tree={link: rounds * size / a(link) for link in LINKS})


def allreduce_s(model: Model, weights: str, gpus: int, link: str) -> float:
    """Ring all-reduce of the gradients, hierarchical across nodes (reduce-scatter and all-gather over
    NVLink inside a node, one ring between nodes through each node's link)."""
    g, per_node = grad_bytes(model, weights), min(gpus, int(a("gpus_per_node")))
    inside = 2 * (per_node - 1) / per_node * g / a("nvlink")
    m = nodes(gpus)
    return inside + (2 * (m - 1) / m * g / a(link) if m > 1 else 0.0)


def learner_memory(model: Model, weights: str) -> float:
    """The learner's weights, gradients, AdamW moments and reference, as langrl holds them: AdamW keeps its
    moments in the parameters' dtype (no float32 master copy); full fine-tuning keeps a frozen reference
    copy; with LoRA the reference is the base with the adapter off (no copy)."""
    p = model.params
    if weights == "LoRA":
        return 2 * p + 16 * model.lora_params(LORA_R)  # bf16 base; fp32 adapter: weight, grad, m, v
    per = {"full bf16": 2, "full fp32": 4}[weights]
    return 4 * per * p + per * p  # weights, grads, m, v + the reference copy


# ------------------------------------------------------------------------------------------- formatting
def fb(x: float) -> str:
    """Bytes, 3 significant digits, decimal units."""
    if x == 0:
        return "0"
    for unit, size in (("TB", 1e12), ("GB", GB), ("MB", MB), ("kB", 1e3)):
        if x >= size:
            return f"{sig(x / size)} {unit}"
    return f"{x:.0f} B"


def sig(x: float, digits: int = 3) -> str:
    if x >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{digits - 1 - math.floor(math.log10(x))}f}" if x > 0 else "0"


def fs(x: float) -> str:
    """Seconds, 2 significant digits."""
    if x == 0:
        return "0"
    if x < 0.001:
        return "<0.001"
    return sig(x, 2)


def table(head: list[str], rows: list[list[str]], right: int = 1) -> str:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def largest(parts: dict[str, float]) -> str:
    return max(parts, key=lambda k: parts[k])


# ------------------------------------------------------------------------------------------------ tables
WEIGHTS = ("full bf16", "LoRA")


def models_table() -> str:
    rows = [[m.name, f"{m.params:,}", f"{m.lora_params(LORA_R):,}", f"{100 * m.lora_params(LORA_R) / m.params:.2f}%",
             fb(m.kv_bytes_per_token())] for m in MODELS]
    return table(["model", "parameters", f"LoRA r={LORA_R} parameters", "LoRA / full", "KV cache per token (bf16)"],
                 rows)


def publish_table() -> str:
    rows = [[m.name, fb(publish_bytes(m, "full bf16")), fb(publish_bytes(m, "full fp32")),
             fb(publish_bytes(m, "LoRA"))] for m in MODELS]
    return table(["model", "full, bf16", "full, fp32", f"LoRA r={LORA_R} (fp32 adapter)"], rows)


def samples_table(w: Workload) -> str:
    rows = []
    for name, values in (("GRPO, RLOO, REINFORCE", False), ("PPO, A2C (+ values)", True)):
        row = sample_bytes_per_row(w, values)
        ints = 8 * 2 * (w.prompt_tokens + w.completion_tokens)
        rows.append([name, fb(row), fb(row * w.rows), f"{100 * ints / row:.0f}%"])
    return table(["algorithm", "per completion", f"per step ({w.rows} completions)", "int64 ids and masks"], rows)


def publish_seconds_table() -> str:
    rows = []
    for m in MODELS:
        for weights in WEIGHTS:
            for gpus in GPU_COUNTS:
                p = publish(m, weights, gpus)
                rows.append([m.name, weights, str(gpus), str(nodes(gpus)), fb(p.egress), fs(p.host),
                             fs(p.star["10 GbE"]), fs(p.star["100 Gb IB"]), fs(p.tree["100 Gb IB"])])
    return table(["model", "weights", "GPUs", "nodes", "head egress", "host copies s", "10 GbE s",
                  "100 Gb IB s", "IB, tree s"], rows, right=2)


def gen_cell(model: Model, w: Workload, rows: int) -> tuple[str, float]:
    """"roofline / with the eager floor" seconds, and the latter (what the verdicts use)."""
    low, real = generation_s(model, w, rows, floor=False), generation_s(model, w, rows)
    return f"{fs(low)} / {fs(real)}", real


def pair(x: float, y: float) -> str:
    return fs(x) if fs(x) == fs(y) else f"{fs(x)} / {fs(y)}"


def rollout_table(w: Workload) -> str:
    """1 learner GPU + (GPUs - 1) rollout workers of one GPU each, shards = workers; 1 GPU: no workers,
    the learner samples one shard. A synchronous step: publish, then sampling, then the learner."""
    rows = []
    for m in MODELS:
        for weights in WEIGHTS:
            for gpus in (1, *GPU_COUNTS):
                r = shard_rows(w, max(1, gpus - 1))
                p = publish(m, weights, gpus) if gpus > 1 else Publish(0, 0, dict.fromkeys(LINKS, 0.0), {})
                cell, gen = gen_cell(m, w, r)
                learn = learner_s(m, weights, w.tokens)
                kv = r * (w.prompt_tokens + w.completion_tokens) * m.kv_bytes_per_token()
                sync = {link: p.host + p.star[link] for link in LINKS}
                verdict = [largest({"publish": sync[link], "generation": gen, "learner": learn}) for link in LINKS]
                rows.append([m.name, weights, str(gpus), str(r), fb(kv), cell, fs(learn),
                             pair(sync["100 Gb IB"], sync["10 GbE"]),
                             pair(sync["100 Gb IB"] + gen + learn, sync["10 GbE"] + gen + learn),
                             " / ".join(dict.fromkeys(verdict))])
    return table(["model", "weights", "GPUs", "rows, largest shard", "its KV cache", "generation s", "learner s",
                  "publish s (IB / 10 GbE)", "step s (IB / 10 GbE)", "largest (IB / 10 GbE)"], rows, right=2)


def data_parallel_table(w: Workload) -> str:
    """GPUs learners, each sampling its own shard, updating on its share and all-reducing gradients."""
    rows = []
    for m in MODELS:
        for weights in WEIGHTS:
            for gpus in GPU_COUNTS:
                g = grad_bytes(m, weights)
                ring = 2 * (gpus - 1) / gpus * g
                cell, gen = gen_cell(m, w, shard_rows(w, gpus))
                learn = learner_s(m, weights, math.ceil(w.tokens / gpus))
                ib, eth = allreduce_s(m, weights, gpus, "100 Gb IB"), allreduce_s(m, weights, gpus, "10 GbE")
                verdict = [largest({"all-reduce": ar, "generation": gen, "learner": learn}) for ar in (ib, eth)]
                rows.append([m.name, weights, str(gpus), fb(g), fb(ring), pair(ib, eth), cell, fs(learn),
                             pair(ib + gen + learn, eth + gen + learn), " / ".join(dict.fromkeys(verdict))])
    return table(["model", "weights", "GPUs", "gradients", "ring bytes per GPU", "all-reduce s (IB / 10 GbE)",
                  "generation s", "learner s", "step s (IB / 10 GbE)", "largest (IB / 10 GbE)"], rows, right=2)


def memory_table(w: Workload) -> str:
    rows = []
    for m in MODELS:
        act = m.activation_bytes(w.micro_batch, w.prompt_tokens + w.completion_tokens)
        cells = [m.name]
        for weights in ("full bf16", "full fp32", "LoRA"):
            cells.append(fb(learner_memory(m, weights)))
        cells += [fb(18 * m.params), fb(act)]
        rows.append(cells)
    return table(["model", "full bf16 (10 B/param)", "full fp32 (20 B/param)", "LoRA (bf16 base)",
                  "mixed-precision AdamW (18 B/param, not langrl)",
                  f"activations, {w.micro_batch} x {w.prompt_tokens + w.completion_tokens} tokens (bf16)"], rows)


def notes(w: Workload) -> str:
    spacing = 2.0 ** (math.floor(math.log2(0.01)) - 7)
    slowest = max(((m, g) for m in MODELS for g in GPU_COUNTS),
                  key=lambda mg: publish(mg[0], "full bf16", mg[1]).star["10 GbE"])
    star = 2 * publish(slowest[0], "full bf16", slowest[1]).star["10 GbE"]  # fp32: twice the bytes
    host = 2 * publish(slowest[0], "full bf16", slowest[1]).host
    back = sample_bytes_per_row(w, values=True) * w.rows
    floor = ", ".join(f"{m.name} {fs(m.layers * a('eager_s_per_layer') * w.completion_tokens)} s" for m in MODELS)
    return "\n".join([
        f"- the eager floor alone, {w.completion_tokens} decode steps: {floor}",
        f"- a whole step's samples (PPO, {fb(back)}) over 10 GbE: {fs(back / a('10 GbE'))} s",
        f"- the slowest publish here, {slowest[0].name} full fp32 to {slowest[1]} GPUs over 10 GbE: "
        f"{fs(host + star)} s, against distributed.timeout_s = 300 s by default",
        f"- bf16 spacing of weights near 0.01: {spacing:.2g} (8 significant bits), against AdamW steps of "
        "about lr (1e-6 to 1e-5 in RL fine-tuning)",
        "- only trainable parameters travel: `train.freeze: [embed_tokens]` (the demo config's) leaves "
        + ", ".join(f"{m.name} {fb(2 * (m.params - m.vocab * m.hidden))}" for m in MODELS) + " per bf16 publish",
        "- a value head (PPO/A2C on a shared trunk) adds hidden + 1 float32 parameters to each publish: "
        + ", ".join(f"{m.name} {fb(4 * (m.hidden + 1))}" for m in MODELS),
    ])


UNITS = {"10 GbE": ("GB/s", GB), "100 Gb IB": ("GB/s", GB), "nvlink": ("GB/s", GB), "host_copy": ("GB/s", GB),
         "hbm": ("TB/s", 1e12), "bf16_flops": ("TFLOP/s", 1e12), "mfu": ("", 1), "eager_s_per_layer": ("ms", 1e-3),
         "gpu_memory": ("GB", GB), "gpus_per_node": ("", 1), "text_bytes_per_token": ("B", 1)}


def assumptions_table() -> str:
    rows = [[k, f"{v / UNITS[k][1]:g} {UNITS[k][0]}".strip()] for k, v in ASSUMPTIONS.items()]
    return table(["assumption", "value"], rows)


SECTIONS: list[tuple[str, Callable[[Workload], str]]] = [
    ("Models", lambda w: models_table()),
    ("Bytes of one weight publish (`sampling_state`)", lambda w: publish_table()),
    ("Bytes of one step's returned samples", samples_table),
    ("Seconds of one weight publish, 1 learner + rollout workers", lambda w: publish_seconds_table()),
    ("Per step, rollout workers (1 learner GPU, the rest rollout workers)", rollout_table),
    ("Per step, data-parallel learners (every GPU a learner)", data_parallel_table),
    ("Learner memory (weights, gradients, AdamW, reference; activations apart)", memory_table),
    ("Notes", notes),
    ("Assumptions", lambda w: assumptions_table()),
]


def render(w: Workload) -> list[tuple[str, str]]:
    return [(title, body(w)) for title, body in SECTIONS]


def verify_doc(doc: Path) -> int:
    """Every table of the default workload appears verbatim in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    missing = [title for title, body in render(Workload()) if body not in text]
    if missing:
        print(f"{doc}: these tables differ from `python benchmarks/scaling_paper.py`: {missing}; paste the "
              "script's output again", file=sys.stderr)
        return 1
    print(f"{doc}: all {len(SECTIONS)} tables match the script")
    return 0


def count_with_transformers() -> int:
    """Build each model on the meta device with transformers (and the LoRA adapter with PEFT) and compare
    the parameter counts with the formulas above."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers name
    bad = 0
    for m in MODELS:
        cfg = LlamaConfig(hidden_size=m.hidden, num_hidden_layers=m.layers, intermediate_size=m.intermediate,
                          vocab_size=m.vocab, num_attention_heads=m.heads, num_key_value_heads=m.kv_heads,
                          tie_word_embeddings=m.tied)
        with torch.device("meta"):
            net = LlamaForCausalLM(cfg)
        full = sum(p.numel() for p in net.parameters())
        peft = get_peft_model(net, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=list(m.linears())))
        lora = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        ok = full == m.params and lora == m.lora_params(LORA_R)
        bad += not ok
        print(f"{m.name}: transformers {full:,} (formula {m.params:,}), PEFT LoRA r={LORA_R} {lora:,} "
              f"(formula {m.lora_params(LORA_R):,}) {'ok' if ok else 'MISMATCH'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Workload()
    parser.add_argument("--prompts", type=int, default=defaults.prompts, help="prompts per step")
    parser.add_argument("--group", type=int, default=defaults.group, help="completions per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens)
    parser.add_argument("--completion-tokens", type=int, default=defaults.completion_tokens)
    parser.add_argument("--micro-batch", type=int, default=defaults.micro_batch)
    parser.add_argument("--verify-doc", action="store_true", help="check docs/scaling.md quotes these tables")
    parser.add_argument("--count-with-transformers", action="store_true",
                        help="check the counts against transformers and PEFT (meta device, no download)")
    args = parser.parse_args()
    if args.verify_doc:
        return verify_doc(Path(__file__).resolve().parents[1] / "docs" / "scaling.md")
    if args.count_with_transformers:
        return count_with_transformers()
    w = Workload(args.prompts, args.group, args.prompt_tokens, args.completion_tokens, args.micro_batch)
    print(f"Workload: {w.prompts} prompts x {w.group} completions = {w.rows} completions a step, "
          f"{w.prompt_tokens} prompt + {w.completion_tokens} completion tokens each ({w.tokens:,} tokens); "
          f"LoRA r={LORA_R} on q, k, v, o, gate, up, down; GPUs {' and '.join(map(str, GPU_COUNTS))}, "
          f"{a('gpus_per_node'):g} a node.\n")
    for title, body in render(w):
        print(f"### {title}\n\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
