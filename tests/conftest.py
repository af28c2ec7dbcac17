import os

import pytest

# Keep the default run offline and quiet; no test reads the user's real cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def tiny():
    from langrl.models import tiny_lm

    return tiny_lm(seed=0)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGRL_CACHE", str(tmp_path / "cache"))


TIERS = ("maths", "smoke", "learning", "slow")


def pytest_collection_modifyitems(items):
    """Mark each test with its tier, the folder it lives in: ``pytest -m maths`` runs tier 1 alone."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
