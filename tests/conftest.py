import os

import pytest

# Keep the default run offline and quiet; no test reads the user's real cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under pytest-xdist (`make test`: -n 2, the Ray tests after it in one process) each worker computes on one
# thread, its subprocesses too: two workers of two threads each on two cores would run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture
def tiny():
    from langrl.models import tiny_lm

    return tiny_lm(seed=0)


def tiny_lm_config(**extra):
    """A 3-step GRPO run of the tiny model on four prompts; ``a__b=v`` sets ``config["a"]["b"] = v``."""
    config = {
        "model": "tiny",
        "algorithm": "grpo",
        "steps": 3,
        "prompts": {"items": ["hello", "world", "abc", "xyz"], "template": "Say {item}", "per_step": 2,
                    "eval_count": 2},
        "sampling": {"max_new_tokens": 8, "group_size": 3},
        "reward": {"type": "length", "target": 4, "unit": "chars"},
        "optim": {"lr": 1e-3},
        "log": {"checkpoint_every": 2, "progress": False, "tensorboard": False},
    }
    for key, value in extra.items():
        node = config
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config


@pytest.fixture
def lm_config():
    """The builder of tiny LM run configs (:func:`tiny_lm_config`)."""
    return tiny_lm_config


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for a test module's rollout workers (marker ``ray``)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def kill_worker(ray_cluster):
    """``kill_worker(step)``: a callback that kills rollout worker 0 after the row of ``step``, as a crashed
    machine would (the run must replace it and redo its share)."""
    from langrl.run.callbacks import Callback

    class KillWorker(Callback):
        def on_step_end(self, step, metrics):
            if step == self.step:
                names = [a["name"] for a in ray_cluster.util.list_named_actors(all_namespaces=True)]
                (victim,) = [n for n in names if n.startswith("langrl-rollout-") and n.endswith("-0-0")]
                ray_cluster.kill(ray_cluster.get_actor(victim), no_restart=True)

    def make(step: int) -> Callback:
        callback = KillWorker()
        callback.step = step
        return callback

    return make


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGRL_CACHE", str(tmp_path / "cache"))


TIERS = ("maths", "smoke", "learning", "slow")


def pytest_sessionstart(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Mark each test with its tier, the folder it lives in: ``pytest -m maths`` runs tier 1 alone."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
