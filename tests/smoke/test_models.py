"""Model loading: tiny models, local folders, the cache location, clear errors."""

import pytest
import torch

from langrl.errors import ConfigError
from langrl.models import cache_dir, load_lm, tiny_lm


def test_tiny_model_is_deterministic_and_round_trips_text():
    a, b = tiny_lm(seed=1), tiny_lm(seed=1)
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    text = "héllo wörld ✓"
    ids = a.tokenizer(text)["input_ids"]
    assert a.tokenizer.decode(ids) == text
    assert a.tokenizer.padding_side == "left" and a.tokenizer.pad_token is not None


def test_load_from_a_local_folder_gives_the_same_model(tmp_path):
    lm = tiny_lm(seed=2)
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_lm(str(tmp_path / "m"), device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, lm.model(ids).logits)
    assert loaded.tokenizer.padding_side == "left"


def test_lora_checkpoint_folder_loads_merged(tmp_path):
    from langrl.models import apply_lora

    base = tiny_lm(seed=3)
    base.model.save_pretrained(tmp_path / "base")
    base.tokenizer.save_pretrained(tmp_path / "base")
    peft = apply_lora(load_lm(str(tmp_path / "base")).model, r=2, alpha=4, dropout=0.0,
                      target_modules="all-linear")
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_()
    peft.save_pretrained(tmp_path / "adapter")
    loaded = load_lm(str(tmp_path / "adapter"))
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, peft(ids).logits, atol=1e-5, rtol=1e-4)


def test_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        load_lm(str(tmp_path / "nope"))


def test_unreachable_hub_id_is_a_config_error():
    with pytest.raises(ConfigError, match="could not be loaded"):
        load_lm("some-org/some-model-that-is-not-here")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LANGRL_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LANGRL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "langrl"


def test_packed_linears_match_plain_and_restore(tiny):
    """Decoding through packed weights gives the plain logits (to rounding), many rows take the plain
    GEMM, and the layers come back after."""
    from langrl.models.packed import can_pack, packed_linears

    model = tiny.model.eval()
    few = torch.randint(0, model.config.vocab_size, (4, 1))
    many = torch.randint(0, model.config.vocab_size, (4, 16))  # 64 rows: above the packed limit
    with torch.no_grad():
        plain_few, plain_many = model(input_ids=few).logits, model(input_ids=many).logits
        with packed_linears(model):
            packed_few, packed_many = model(input_ids=few).logits, model(input_ids=many).logits
    torch.testing.assert_close(packed_few, plain_few, atol=1e-4, rtol=1e-4)
    assert torch.equal(packed_many, plain_many)
    assert can_pack(model) == torch.backends.mkldnn.is_available()
    assert not any("forward" in vars(m) for m in model.modules())


def test_freed_memory_is_kept_for_reuse_on_glibc():
    """`reuse_freed_memory` sets glibc's thresholds (Linux) and says so; elsewhere it changes nothing."""
    import platform

    from langrl.run.runtime import reuse_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert reuse_freed_memory() is glibc
