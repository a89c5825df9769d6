"""Which clips pre-training reads: ``data.splits`` (auto leaves evaluation splits out)."""
from __future__ import annotations

import numpy as np
import pytest

from slpfast.layouts import NUM_JOINTS


def _store(path, splits: list[str]) -> str:
    from slpfast.data.store_writer import StoreWriter

    with StoreWriter(str(path), shard_clips=4) as w:
        for i, split in enumerate(splits):
            w.add(np.zeros((3, NUM_JOINTS, 2), np.float32), np.ones((3, NUM_JOINTS), np.float32),
                  text=f"sentence {i}", split=split)
    return str(path)


def _cfg(*args):
    from slpfast.train.config import parse_args

    return parse_args(list(args))


@pytest.mark.parametrize("name, is_eval", [
    ("train", False), ("", False), ("train_2", False), ("testament", False), ("contest", False),
    ("val", True), ("dev", True), ("test", True), ("validation", True), ("islr_test", True),
    ("sentence_val", True), ("How2Sign-Dev", True), ("phoenix.test", True), ("testset", True),
])
def test_evaluation_split_names(name, is_eval):
    from slpfast.train.data import is_eval_split

    assert is_eval_split(name) is is_eval


def open_store(cfg, dist):
    """(store, the splits pre-training reads) as PretrainData takes them."""
    from slpfast.train.data import open_store, pretrain_splits

    store = open_store(cfg, dist)
    return store, pretrain_splits(store, cfg.data.splits)


def test_a_converted_store_is_pre_trained_on_its_training_splits_only(tmp_path):
    """A store converted with its val / test splits was pre-trained on every clip: the
    downstream evaluation sentences were seen (sign-text contrastive) before evaluation."""

    path = _store(tmp_path / "s", ["train", "val", "test", "train", "extra", "dev", "train"])
    store, splits = open_store(_cfg(f"--data.store={path}"), None)
    assert sorted(splits) == ["extra", "train"]
    assert store.indices(splits).tolist() == [0, 3, 4, 6]
    assert open_store(_cfg(f"--data.store={path}", "--data.splits=all"), None)[1] is None
    assert open_store(_cfg(f"--data.store={path}", "--data.splits=train, val"), None)[1] == ["train", "val"]
    with pytest.raises(ValueError, match=r"data.splits: .* has no split 'trian' \(its splits: "):
        open_store(_cfg(f"--data.store={path}", "--data.splits=trian"), None)
    # nothing to leave out: every clip, no index
    only_train = _store(tmp_path / "t", ["train", "train", ""])
    assert open_store(_cfg(f"--data.store={only_train}"), None)[1] is None
    # nothing left: named, with the two ways out
    only_test = _store(tmp_path / "u", ["test", "test"])
    with pytest.raises(ValueError, match=r"data.splits: every clip .*--data.splits=all"):
        open_store(_cfg(f"--data.store={only_test}"), None)


def test_the_loader_draws_only_the_splits_pre_trained_on(tmp_path):
    import torch

    from slpfast.train import data as train_data
    from slpfast.train.distributed import DistInfo

    path = _store(tmp_path / "s", ["train", "test"] * 6)
    cfg = _cfg(f"--data.store={path}", "--data.batch_size=2", "--data.max_frames=8", "--text.kind=small",
               f"--train.out_dir={tmp_path / 'run'}", "--train.progress=false", "--train.tensorboard=false")
    data = train_data.PretrainData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))
    seen = set()
    for step in range(6):  # two epochs of the 6 training clips
        seen.update(int(i) for i in data.next_batch(step)["clip_id"])
    assert seen == {0, 2, 4, 6, 8, 10}
    cfg = _cfg(f"--data.store={path}", "--data.batch_size=8", "--data.max_frames=8", "--text.kind=small",
               f"--train.out_dir={tmp_path / 'run2'}", "--train.progress=false", "--train.tensorboard=false")
    with pytest.raises(ValueError, match=r"larger than the 6 clips in the splits pre-trained on \(train\) .*"
                                         r"--data.batch_size"):
        train_data.PretrainData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))


def test_mixtures_take_the_training_splits_of_each_store(tmp_path):
    from slpfast.train.data import open_store_mixture

    a = _store(tmp_path / "a", ["train", "val"] * 3)
    b = _store(tmp_path / "b", ["train"] * 2 + ["test"] * 2)
    cat, mix = open_store_mixture(_cfg(f"--data.store={a},{b}"))
    ids = np.sort(mix.epoch_indices(0))
    assert ids.tolist() == [0, 2, 4, 6, 7]  # b's clips are 6.. in the concatenation


def test_fine_tuning_refuses_the_pre_training_split_setting():
    from slpfast import finetune

    with pytest.raises(ValueError, match="data.splits is for pre-training"):
        finetune.parse_args(["--task", "islr", "--data.splits=all"])


def test_fine_tuning_reads_a_store_of_evaluation_splits_only(tmp_path):
    """The pre-training split rule is not fine-tuning's: a store of dev / test clips fine-tunes on
    the splits its task names (it was refused with a pre-training error and a way out,
    --data.splits=all, that fine-tuning itself refuses)."""
    import torch

    from slpfast import finetune
    from slpfast.finetune_data import FinetuneData
    from slpfast.train.distributed import DistInfo

    path = _store(tmp_path / "s", ["dev", "test"] * 6)
    cfg = finetune.parse_args(["--task", "retrieval", "--init", "none", "--data", path, "--task.train_split=dev",
                               "--task.eval_splits=test", "--text.kind=small", "--data.batch_size=2",
                               "--data.max_frames=8", f"--train.out_dir={tmp_path / 'run'}",
                               "--train.progress=false", "--train.tensorboard=false"])
    data = FinetuneData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))
    assert sorted(int(i) for i in data.train_indices) == list(range(0, 12, 2))
