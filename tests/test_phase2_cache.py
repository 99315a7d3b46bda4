"""The phase-2 cache without Ray: keys, atomic entries, corrupt entries treated as absent."""
import torch

from trainables.phase2_cache import Phase2Cache, phase2_key

CONFIG = {"model": "smoke", "cell": "english:en_paraphrase:random:32", "seed": 0, "lr_intermediate": 1e-3}


def test_key_ignores_what_phase_2_does_not_depend_on():
    assert phase2_key(CONFIG) == phase2_key({**CONFIG, "lr_target": 5.0, "targets": ["genre"]})
    assert phase2_key(CONFIG) != phase2_key({**CONFIG, "seed": 1})


def test_store_load_and_corruption(tmp_path):
    cache = Phase2Cache(tmp_path)
    key = phase2_key(CONFIG)
    assert cache.load(key) is None
    cache.store(key, {"w": torch.arange(6.0)}, {"steps": 4})
    tensors, description = cache.load(key)
    assert torch.equal(tensors["w"], torch.arange(6.0)) and description == {"steps": 4}
    assert [p.name for p in tmp_path.iterdir()] == [key]            # no temporary folder left behind
    weights = cache.entry(key) / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    assert cache.load(key) is None                                   # hash mismatch: recomputed
    cache.store(key, {"w": torch.ones(2)}, {"steps": 1})             # a corrupt entry is replaced
    assert torch.equal(cache.load(key)[0]["w"], torch.ones(2))
