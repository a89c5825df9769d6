"""slpfast.finetune end to end on a tiny synthetic corpus: every task trains a few steps and is
evaluated, eval-only from its checkpoint reproduces the numbers, zero-shot retrieval from a
pre-training checkpoint, and bad arguments give clear errors."""
import json
import os

import numpy as np
import pytest
import torch

from slpfast import finetune
from slpfast.finetune_data import label_subset

COMMON = ["--data.batch_size=8", "--data.max_frames=48", "--train.log_every=2", "--train.progress=false",
          "--train.tensorboard=false", "--task.eval_batch_size=32", "--task.slt_width=32", "--task.slt_heads=2",
          "--task.slt_layers=1", "--task.beam_size=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from slpfast.data.synthetic import generate_corpus

    path = str(tmp_path_factory.mktemp("corpus") / "store")
    generate_corpus(path, num_clips=120, seed=3, num_glosses=10)
    return path


def _run(corpus, out, *args):
    cfg = finetune.parse_args(["--data", corpus, f"--train.out_dir={out}", *COMMON, *args])
    return finetune.run(cfg)


@pytest.fixture(scope="module")
def pretrain_ckpt(corpus, tmp_path_factory):
    """A 2-step pre-training run (small trainable text encoder) -> its checkpoint and export."""
    from slpfast.train.config import parse_args
    from slpfast.train.trainer import Trainer

    out = str(tmp_path_factory.mktemp("pre"))
    cfg = parse_args([f"--data.store={corpus}", "--train.steps=2", "--data.batch_size=8", "--data.max_frames=48",
                      "--text.kind=small", f"--train.out_dir={out}", "--train.progress=false",
                      "--train.tensorboard=false"])
    tr = Trainer(cfg)
    try:
        tr.run()
    finally:
        tr.close()
    return os.path.join(out, "checkpoints", "step_00000002.pt"), os.path.join(out, "encoder.safetensors")


@pytest.mark.parametrize("task,keys", [
    ("islr", ["top1", "top5", "top1_per_class", "top5_per_class"]),
    ("cslr", ["wer_greedy", "wer_beam"]),
    ("slt", ["bleu4", "rouge_l"]),
])
def test_task_trains_and_evaluates(corpus, tmp_path, task, keys):
    res = _run(corpus, str(tmp_path), "--task", task, "--init", "none", "--train.steps=2")
    assert res["steps"] == 2 and res["train"]["status"] == "completed"
    loss = res["train"]["last"][f"loss/{ {'islr': 'ce', 'cslr': 'ctc', 'slt': 'ce'}[task]}"]
    assert np.isfinite(loss)
    assert set(res["metrics"]) == {f"{'islr' if task == 'islr' else 'sentence'}_{s}" for s in ("val", "test")}
    for m in res["metrics"].values():
        for k in keys:
            assert np.isfinite(m[k]) and m[k] >= 0
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        written = json.load(f)
    assert written["task"] == task and written["config"]["task"]["task"] == task
    # the task's main metric is named and is in every split's metrics
    assert written["main_metric"]["name"] == res["main_metric"]["name"]
    assert all(res["main_metric"]["name"] in m for m in res["metrics"].values())
    # evaluate-only from the fine-tuning checkpoint, in the training run's own folder, gives the
    # same numbers and leaves that run's results.json (with its training summary) as it was
    ckpt = os.path.join(str(tmp_path), "checkpoints", "step_00000002.pt")
    again = _run(corpus, str(tmp_path), "--task", task, "--init", ckpt, "--eval-only")
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        assert json.load(f) == written
    assert again["results_path"] == os.path.join(str(tmp_path), "results_eval.json")
    with open(again["results_path"]) as f:
        assert json.load(f)["eval_only"] is True
    assert again["init_kind"] == "finetune"
    # the evaluated model's fine-tuning steps are the checkpoint's (the eval-only run trains none)
    assert again["steps"] == 2 and again["init_step"] == 2 and "train" not in again
    for split, m in res["metrics"].items():
        for k in keys:
            assert again["metrics"][split][k] == pytest.approx(m[k], abs=1e-6), (split, k)


def test_retrieval_zero_shot_then_finetune(corpus, tmp_path, pretrain_ckpt):
    ckpt, export = pretrain_ckpt
    zs = _run(corpus, str(tmp_path / "zs"), "--task", "retrieval", "--init", ckpt, "--eval-only")
    assert zs["init_kind"] == "pretrain" and zs["steps"] == 0 and zs["init_step"] == 2
    val = zs["metrics"]["sentence_val"]
    for k in ("s2t_R@1", "s2t_R@5", "s2t_R@10", "s2t_MedR", "t2s_R@1", "t2s_MedR"):
        assert np.isfinite(val[k])
    ft = _run(corpus, str(tmp_path / "ft"), "--task", "retrieval", "--init", ckpt, "--train.steps=2")
    assert ft["steps"] == 2 and np.isfinite(ft["train"]["last"]["loss/nce"])
    # ISLR from the exported encoder: the encoder weights are the pre-trained ones at step 0
    from slpfast.finetune_data import FinetuneData
    from slpfast.models.encoder import PoseEncoder
    from slpfast.train.distributed import setup

    cfg = finetune.parse_args(["--task", "islr", "--init", export, "--data", corpus, "--task.eval_only=true",
                               *COMMON])
    model = FinetuneData(cfg, setup("cpu")).build_model()
    ref = PoseEncoder.from_pretrained(export)
    for (k, a), (_, b) in zip(model.encoder.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    # zero-shot retrieval uses the pre-trained contrastive head and text encoder as they are
    cfg = finetune.parse_args(["--task", "retrieval", "--init", ckpt, "--data", corpus, "--task.eval_only=true",
                               *COMMON])
    model = FinetuneData(cfg, setup("cpu")).build_model()
    state = torch.load(ckpt, weights_only=False)["model"]
    for k in ("sign_proj.weight", "text_proj.bias", "contrastive.log_scale"):
        assert torch.equal(model.head.state_dict()[k], state[k]), k
    some = next(k for k in state if k.startswith("text_encoder."))
    assert torch.equal(model.text_encoder.state_dict()[some[len("text_encoder."):]], state[some])


def test_label_subset_is_stratified():
    labels = np.repeat(np.arange(5), [10, 10, 10, 3, 1])
    idx = np.arange(len(labels))
    sub = label_subset(labels, idx, 0.1, seed=0)
    assert sorted(set(labels[sub])) == [0, 1, 2, 3, 4]        # every class kept
    assert len(sub) == 1 + 1 + 1 + 1 + 1                       # round(10% of each), at least 1
    assert np.array_equal(sub, label_subset(labels, idx, 0.1, seed=0))
    assert np.array_equal(label_subset(labels, idx, 1.0, seed=0), idx)


def test_bad_arguments(corpus, tmp_path, pretrain_ckpt):
    ckpt, export = pretrain_ckpt
    with pytest.raises(ValueError, match="--init: .* does not exist"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="--data: .* not a store directory"):
        finetune.parse_args(["--task", "islr", "--data", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="task.task must be islr, cslr, retrieval or slt"):
        finetune.parse_args(["--task", "pose-estimation"])
    with pytest.raises(ValueError, match="unknown key task.lable_fraction"):
        finetune.parse_args(["--task.lable_fraction=0.1"])
    with pytest.raises(ValueError, match="task.label_fraction must be in"):
        finetune.parse_args(["--task.label_fraction=0"])
    # an encoder whose tensors do not match its own config
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(export, framework="pt") as f:
        meta = f.metadata()
    state = load_file(export)
    name = next(k for k in state if k.endswith("weight") and state[k].dim() == 2)
    state[name] = torch.zeros(3, 3)
    del state[next(k for k in state if k.endswith("bias"))]
    bad = str(tmp_path / "bad.safetensors")
    save_file(state, bad, metadata=meta)
    with pytest.raises(ValueError, match=r"do not match the model's encoder \(missing 1: .*shape mismatch"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", bad)
    # safetensors without the encoder config, and a file that is not a checkpoint
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no slpfast_encoder_config metadata"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", str(tmp_path / "plain.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", str(tmp_path / "junk.pt"))
    # a fine-tuning checkpoint of another task
    other = torch.load(ckpt, weights_only=False)
    other["config"]["task"] = {"task": "cslr"}
    torch.save(other, str(tmp_path / "cslr.pt"))
    with pytest.raises(ValueError, match="fine-tuning checkpoint of task 'cslr', not 'islr'"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", str(tmp_path / "cslr.pt"))
    # eval-only needs trained heads (only retrieval can be zero-shot)
    with pytest.raises(ValueError, match="--eval-only: islr needs a fine-tuning checkpoint"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", ckpt, "--eval-only")
    # the CLI turns all of these into exit code 2 and one line on stderr
    assert finetune.main(["--task", "islr", "--init", str(tmp_path / "nope.pt")]) == 2


def test_slt_with_local_hf_seq2seq(corpus, tmp_path):
    from test_finetune_heads import _tiny_bart

    path = _tiny_bart(tmp_path)
    res = _run(corpus, str(tmp_path / "run"), "--task", "slt", "--init", "none", "--train.steps=1",
               f"--task.slt_model={path}", "--task.slt_max_len=8", "--task.eval_splits=sentence_val")
    m = res["metrics"]["sentence_val"]
    assert np.isfinite(res["train"]["last"]["loss/ce"]) and 0 <= m["bleu4"] <= 100 and 0 <= m["rouge_l"] <= 100
    with pytest.raises(ValueError, match="task.slt_model must be a local directory"):
        finetune.parse_args(["--task", "slt", f"--task.slt_model={tmp_path / 'missing'}"])


def test_model_options_are_not_silently_ignored_with_init(corpus, tmp_path, pretrain_ckpt):
    """--model.size=small with a tiny encoder as --init was ignored (a tiny model trained);
    it must be an error, while runtime fields (dropout, attention backend) still apply."""
    from slpfast.finetune_data import FinetuneData
    from slpfast.train.distributed import DistInfo

    ckpt, export = pretrain_ckpt
    for init in (export, ckpt):
        with pytest.raises(ValueError, match=r"--init: .*model\.size='small' \(the file has 'tiny'\)"):
            _run(corpus, str(tmp_path), "--task", "islr", "--init", init, "--model.size=small")
    with pytest.raises(ValueError, match=r"model\.dim=128 \(the file has 64\)"):
        _run(corpus, str(tmp_path), "--task", "islr", "--init", export, "--model.dim=128")
    cfg = finetune.parse_args(["--data", corpus, f"--train.out_dir={tmp_path}", *COMMON, "--task", "islr",
                               "--init", export, "--model.dropout=0.2", "--model.dim=64"])
    data = FinetuneData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))
    assert cfg.model.dropout == 0.2 and cfg.model.dim == 64 and data.src.encoder_config.dropout == 0.2


def test_progress_says_finetune_and_results_are_written_atomically(corpus, tmp_path, capsys, monkeypatch):
    """The bar of a fine-tuning run was labelled 'pretrain'; results.json was written in place,
    so a failure while writing left a truncated file over the previous results."""
    res = tmp_path / "results.json"
    _run(corpus, str(tmp_path), "--task", "islr", "--train.steps=1", "--train.progress=true", f"--results={res}")
    err = capsys.readouterr().err
    assert "finetune: 100%" in err and "pretrain:" not in err, err
    good = res.read_text()
    assert json.loads(good)["steps"] == 1

    class FailingJson:
        @staticmethod
        def dump(obj, f, **kw):
            f.write('{"task": ')
            raise OSError("disk full")

        @staticmethod
        def dumps(obj, **kw):
            raise OSError("disk full")

    monkeypatch.setattr(finetune, "json", FailingJson)
    # another run folder (a fresh run in this one moves its results.json aside with its checkpoints)
    with pytest.raises(OSError, match="disk full"):
        _run(corpus, str(tmp_path / "second"), "--task", "islr", "--train.steps=1", f"--results={res}")
    assert res.read_text() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("results.json")] == ["results.json"]


def test_negative_label_seed_is_a_config_error():
    """numpy raised an unnamed 'expected non-negative integer' from inside label_subset."""
    with pytest.raises(ValueError, match="task.label_seed must be >= 0"):
        finetune.parse_args(["--task", "islr", "--task.label_fraction=0.5", "--task.label_seed=-1"])


def test_store_without_evaluation_splits_is_an_error(tmp_path):
    """A store with only a 'train' split fine-tuned, wrote results with no metric at all and exited 0."""
    from slpfast.data import StoreWriter
    from slpfast.layouts import NUM_JOINTS

    rng = np.random.default_rng(0)
    with StoreWriter(str(tmp_path / "st")) as w:
        for i in range(8):
            w.add(rng.random((12, NUM_JOINTS, 2)), rng.random((12, NUM_JOINTS)), text=f"sentence {i}")
    with pytest.raises(ValueError, match=r"task.eval_splits: .* has none of the evaluation splits "
                                         r"sentence_val, sentence_test, val, test \(splits: \['train'\]\)"):
        _run(str(tmp_path / "st"), str(tmp_path / "run"), "--task", "retrieval", "--train.steps=1")
    res = _run(str(tmp_path / "st"), str(tmp_path / "run2"), "--task", "retrieval", "--train.steps=1",
               "--task.eval_splits=train", "--data.batch_size=4")
    assert "s2t_R@1" in res["metrics"]["train"]


def test_init_from_a_run_folder_and_clear_messages(corpus, tmp_path, pretrain_ckpt, monkeypatch):
    """--init <run folder> said "does not exist"; --foo said "needs a value"; a store without the
    task's target said only "no usable clips"."""
    from slpfast.finetune_init import read_init
    from slpfast.models import PoseEncoderConfig

    ckpt, export = pretrain_ckpt
    run_dir = os.path.dirname(os.path.dirname(ckpt))
    assert read_init(run_dir, PoseEncoderConfig()).path == export  # the exported encoder first
    only_ckpt = tmp_path / "interrupted"
    (only_ckpt / "checkpoints").mkdir(parents=True)
    os.link(ckpt, only_ckpt / "checkpoints" / "step_00000002.pt")
    src = read_init(str(only_ckpt), PoseEncoderConfig())
    assert src.kind == "pretrain" and src.path.endswith("step_00000002.pt")
    assert read_init(str(only_ckpt / "checkpoints"), PoseEncoderConfig()).path == src.path
    with pytest.raises(ValueError, match="holds neither an encoder.safetensors nor checkpoints"):
        read_init(str(tmp_path), PoseEncoderConfig())
    with pytest.raises(ValueError, match="unknown option --foo"):
        finetune.parse_args(["--task", "islr", "--foo"])
    from slpfast.data import Store

    init = Store.__init__

    def without_labels(self, *a, **kw):  # a store converted without a label column
        init(self, *a, **kw)
        self.labels = np.full_like(self.labels, -1)

    monkeypatch.setattr(Store, "__init__", without_labels)
    with pytest.raises(ValueError, match="has a class label .*label column"):
        _run(corpus, str(tmp_path / "ft"), "--task", "islr")


def test_sentence_tasks_train_on_whole_clips(corpus, tmp_path, monkeypatch):
    """CSLR / SLT trained on random 64-frame windows of 85-195-frame sentences while the loss
    asked for every gloss / word of the sentence."""
    from slpfast.finetune_data import FinetuneData
    from slpfast.train.trainer import Trainer

    seen = []
    real = FinetuneData.next_batch

    def spy(self, step):
        batch = real(self, step)
        seen.append((batch["lengths"].clone(), self.store.lengths[batch["clip_id"].numpy()]))
        return batch

    monkeypatch.setattr(FinetuneData, "next_batch", spy)
    for task, crops in (("cslr", False), ("islr", True)):
        seen.clear()
        cfg = finetune.parse_args(["--task", task, "--data", corpus, f"--train.out_dir={tmp_path / task}", *COMMON,
                                   "--train.steps=2", "--task.eval_splits=" + ("sentence_val" if task == "cslr"
                                                                               else "islr_val")])
        tr = Trainer(cfg, data_factory=FinetuneData)
        try:
            tr.run()
        finally:
            tr.close()
        fed, stored = seen[0]
        assert (fed.numpy() == stored).all() != crops, (task, fed.tolist(), stored.tolist())
        if crops:
            assert int(fed.max()) <= 48


def test_sentence_clips_too_long_for_the_model_are_left_out_of_training(corpus, tmp_path, capsys):
    from slpfast.finetune_data import FinetuneData
    from slpfast.train.data import longest_augmentable
    from slpfast.train.distributed import DistInfo

    cfg = finetune.parse_args(["--task", "cslr", "--data", corpus, f"--train.out_dir={tmp_path}", *COMMON,
                               "--model.max_frames=120"])
    data = FinetuneData(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")))
    lengths = data.store.lengths[data.train_indices]
    assert lengths.max() <= longest_augmentable(120) and len(lengths) > 0
    assert "training clips are longer than 108 frames" in capsys.readouterr().out


def test_zero_shot_retrieval_needs_a_contrastive_head(corpus, tmp_path):
    from slpfast.train.config import parse_args
    from slpfast.train.trainer import Trainer

    out = str(tmp_path / "mpm_only")
    tr = Trainer(parse_args([f"--data.store={corpus}", "--train.steps=1", "--data.batch_size=8",
                             "--data.max_frames=48", "--text.weight=0", f"--train.out_dir={out}",
                             "--train.progress=false", "--train.tensorboard=false"]))
    try:
        tr.run()
    finally:
        tr.close()
    with pytest.raises(ValueError, match="pre-trained without the sign-text contrastive term"):
        _run(corpus, str(tmp_path / "ft"), "--task", "retrieval", "--init",
             os.path.join(out, "checkpoints", "step_00000001.pt"), "--eval-only")


def test_frozen_encoder_stays_in_eval_mode():
    from slpfast.finetune_tasks import ISLRModel
    from slpfast.models import PoseEncoder, PoseEncoderConfig

    model = ISLRModel(PoseEncoder(PoseEncoderConfig(size="tiny", dim=32, heads=2, dropout=0.3)), num_classes=5)
    model.frozen_encoder = True
    model.train()
    assert model.training and not model.encoder.training and model.head.training


def test_slt_word_vocabulary_scores_references_in_its_own_form(monkeypatch):
    """The word vocabulary lower-cases: a perfect decoder scored BLEU-4 27 against cased refs."""
    from slpfast.data.collate import WordTokenizer
    from slpfast.finetune_tasks import SLTModel, compute_metrics
    from slpfast.models import PoseEncoder, PoseEncoderConfig
    from slpfast.layouts import NUM_JOINTS

    refs = ["The cat  sleeps .", "Tomorrow Anna visits Berlin ."]
    vocab = WordTokenizer.from_texts(refs)
    model = SLTModel(PoseEncoder(PoseEncoderConfig(size="tiny", dim=32, heads=2)), vocab=vocab, width=32, heads=2)
    oracle = torch.tensor([vocab.encode(r)[1:] + [0] * (8 - len(vocab.encode(r)) + 1) for r in refs])
    monkeypatch.setattr(model.head, "generate", lambda frames, lengths, max_len: oracle)  # a perfect decoder
    batch = {"clip_id": torch.tensor([0, 1]), "text": refs}
    records = model.predict(torch.zeros(2, 4, NUM_JOINTS, 2), torch.ones(2, 4, NUM_JOINTS), torch.tensor([4, 4]),
                            batch)
    m = compute_metrics("slt", records)
    assert m["bleu4"] == pytest.approx(100.0) and m["rouge_l"] == pytest.approx(100.0)


def test_slt_targets_longer_than_max_len_keep_their_end_token(monkeypatch):
    """A sentence longer than slt_max_len was cut before its <eos>: the decoder never learned to
    stop on long sentences."""
    from slpfast.data.collate import WordTokenizer
    from slpfast.finetune_tasks import SLTModel
    from slpfast.layouts import NUM_JOINTS
    from slpfast.models import PoseEncoder, PoseEncoderConfig

    texts = ["a b c d e f g h", "a b"]
    vocab = WordTokenizer.from_texts(texts)
    model = SLTModel(PoseEncoder(PoseEncoderConfig(size="tiny", dim=32, heads=2)), vocab=vocab, width=32, heads=2,
                     max_len=5)
    seen = {}
    monkeypatch.setattr(model.head, "loss", lambda frames, lengths, ids, ls: seen.setdefault("ids", ids).sum() * 0.0)
    model(torch.zeros(2, 4, NUM_JOINTS, 2), torch.ones(2, 4, NUM_JOINTS), torch.tensor([4, 4]), texts)
    ids = seen["ids"]
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == [vocab.bos_token_id, *vocab.encode("a b c")[1:4], vocab.eos_token_id]
    assert ids[1].tolist() == vocab.encode("a b") + [vocab.pad_token_id]


def test_zero_shot_retrieval_from_a_run_folder(corpus, tmp_path, pretrain_ckpt):
    """A run folder resolved to its exported encoder, which has no sign-text projections:
    zero-shot retrieval was refused (with a self-contradicting message)."""
    ckpt, _ = pretrain_ckpt
    run_dir = os.path.dirname(os.path.dirname(ckpt))
    zs = _run(corpus, str(tmp_path / "zs"), "--task", "retrieval", "--init", run_dir, "--eval-only")
    assert zs["init_kind"] == "pretrain"
    with pytest.raises(ValueError, match=r"retrieval needs .* pre-training checkpoint \(zero-shot"):
        _run(corpus, str(tmp_path / "enc"), "--task", "retrieval", "--init",
             os.path.join(run_dir, "encoder.safetensors"), "--eval-only")


def test_label_subset_matches_the_per_class_scan():
    """label_subset scanned every clip once per class (O(N x classes): ~30 s for 1.5M clips of
    10k classes); one stable sort picks exactly the same clips (members in ``indices`` order,
    classes in sorted order, the same draws)."""
    def per_class(labels, indices, fraction, seed):
        rng = np.random.default_rng([seed, 0x1AB])
        keep = [rng.choice(indices[labels[indices] == c], size=max(1, int(round(fraction * (labels[indices] == c).sum()))),
                           replace=False) for c in np.unique(labels[indices])]
        return np.sort(np.concatenate(keep)) if keep else indices[:0]

    rng = np.random.default_rng(3)
    for _ in range(50):
        labels = rng.integers(-1, int(rng.integers(1, 12)), 300)
        idx = rng.permutation(300)[: int(rng.integers(0, 300))]  # unsorted, a subset
        f, seed = float(rng.random()), int(rng.integers(0, 99))
        assert np.array_equal(label_subset(labels, idx, f, seed), per_class(labels, idx, f, seed))
