"""How much of the CartPole state a linear probe reads from a frozen LM's features of the text observation.

States come from uniformly random CartPole episodes; each is described as ``langrl/CartPole-Text-v0``
describes it, encoded by the LM, and pooled (mean over tokens, or the last token) at several layers. A
ridge regression per state variable is fitted on the first ``--train`` states and scored (R^2) on the
rest, against the state rounded as the text rounds it. R^2 near 1 means the four numbers can be read
back linearly; the gap to 1 is the noise a policy on these features has to live with.

    OMP_NUM_THREADS=1 python benchmarks/probe_cartpole_features.py --states 1600 --json probe.json
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import torch

from langrl.envs.text.cartpole import describe_cartpole
from langrl.models import load_lm

NAMES = ("position", "velocity", "angle", "angular velocity")


def random_states(n: int, seed: int) -> np.ndarray:
    """``n`` states visited by a uniformly random policy, episode after episode."""
    rng, env, states = np.random.default_rng(seed), gym.make("CartPole-v1"), []
    while len(states) < n:
        observation, _ = env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done and len(states) < n:
            states.append(observation)
            observation, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
            done = terminated or truncated
    return np.array(states)


@torch.no_grad()
def features(texts: list[str], lm_name: str, layers: list[int]) -> dict[str, np.ndarray]:
    """``"layer/pooling"`` -> (N, H) pooled hidden states (the tokenizer pads on the left)."""
    lm = load_lm(lm_name, device="cpu")
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), 32):
        batch = lm.tokenizer(texts[i:i + 32], return_tensors="pt", padding=True)
        hidden = lm.model.model(**batch, output_hidden_states=True).hidden_states
        mask = batch.attention_mask.float().unsqueeze(-1)
        for layer in layers:
            h = hidden[layer]
            out.setdefault(f"{layer}/mean", []).append(((h * mask).sum(1) / mask.sum(1)).numpy())
            out.setdefault(f"{layer}/last", []).append(h[:, -1].numpy())
    return {key: np.concatenate(parts) for key, parts in out.items()}


def probe_r2(x: np.ndarray, y: np.ndarray, n_train: int, ridge: float) -> list[float]:
    """Held-out R^2 of a ridge regression from standardised ``x`` to each column of ``y``."""
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = np.c_[(x - mean) / std, np.ones(len(x))]
    a, b = x[:n_train], x[n_train:]
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(x.shape[1]), a.T @ y[:n_train])
    residual = ((b @ weights - y[n_train:]) ** 2).mean(0)
    return [float(v) for v in 1 - residual / y[n_train:].var(0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=1600)
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--layers", default="4,8,16,24,30")
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    states = random_states(args.states, args.seed)
    feats = features([describe_cartpole(s) for s in states], args.lm,
                     [int(v) for v in args.layers.split(",")])
    target = np.round(states, 2)
    results = {key: dict(zip(NAMES, probe_r2(x, target, args.train, args.ridge), strict=True))
               for key, x in feats.items()}
    for key, r2 in results.items():
        print(f"{key:>8}  " + "  ".join(f"{name} {value:.3f}" for name, value in r2.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "probe_cartpole_features", "args": vars(args), "r2": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
