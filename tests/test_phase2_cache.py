"""The phase-2 cache without Ray: keys, atomic entries, corrupt entries treated as absent."""
import dataclasses

import pytest
import torch

from trainables.errors import UserError
from trainables.phase2_cache import Phase2Cache, phase2_key
from trainables.trial_config import PARAM, PHASE2, TrialConfig

CONFIG = TrialConfig(model="smoke", cell="english:en_paraphrase:random:32", seed=0, lr_intermediate=1e-3)


def test_key_ignores_what_phase_2_does_not_depend_on():
    assert phase2_key(CONFIG) == phase2_key(dataclasses.replace(CONFIG, lr_target=5.0, targets=("genre",)))
    for change in (dict(seed=1), dict(precision="fp32"), dict(max_length=64), dict(num_workers=2)):
        assert phase2_key(CONFIG) != phase2_key(dataclasses.replace(CONFIG, **change)), change


def test_trial_config_is_the_one_source_of_keys():
    config = TrialConfig.from_dict({"cell": "none", "targets": ["genre"], "eval_languages": ["fr"]})
    assert config.targets == ("genre",) and config.eval_languages == ("fr",)
    assert TrialConfig.from_dict(config.as_dict()) == config
    with pytest.raises(UserError, match="lr_intermedate"):
        TrialConfig.from_dict({"lr_intermedate": 1e-5})
    assert {"lr_intermediate", "precision", "cell"} <= set(config.marked(PHASE2)) and "lr_target" not in \
        config.marked(PHASE2)
    assert {"lr_target", "target_train_size", "cell"} <= set(config.marked(PARAM))
    train = CONFIG.train_config("target", type("Task", (), {"max_length": 64})())
    assert (train.lr, train.max_length, train.seed) == (CONFIG.lr_target, 64, 0)


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
