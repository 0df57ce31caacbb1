"""The video adapter: text vocabulary + [>] + visual words (multibert.video.adapter)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from multibert.core.batch import TokenBatch
from multibert.core.config import BertConfig
from multibert.core.convert import hf_to_multibert, load_into, read_hf_checkpoint
from multibert.core.pretraining import PretrainingTask
from multibert.video.adapter import VideoAdapter, centroid_rows
from multibert.video.quantize import HierarchicalKMeans

V_TEXT, D = 99, 20


@pytest.fixture(scope="module")
def codebook(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    tree = HierarchicalKMeans(depth=2, branching=3).fit(torch.randn(300, D, generator=g))
    return str(tree.save(tmp_path_factory.mktemp("cb") / "codebook.safetensors"))


def config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def test_layout_of_the_extended_vocabulary(codebook):
    adapter = VideoAdapter(config(V_TEXT + 1 + 9), codebook)
    assert (adapter.text_vocab_size, adapter.separator_id, adapter.visual_offset, adapter.num_visual_words) == (99, 99, 100, 9)
    assert adapter.output_embeddings().weight.shape == (109, 32)
    tree = HierarchicalKMeans.load(codebook)
    x = torch.randn(40, D)
    assert torch.equal(adapter.visual_token_ids(x), tree.assign(x) + 100)
    assert set(adapter.state_dict()) >= {"codebook_level_0", "codebook_level_1", "word_embeddings.weight"}


def test_visual_rows_start_from_the_centroids(codebook):
    adapter = VideoAdapter(config(109), codebook)
    rows = adapter.word_embeddings.weight[100:].detach()
    leaves = HierarchicalKMeans.load(codebook).leaves
    # PCA keeps the geometry: pairwise distances of rows and of centroids are strongly correlated
    a, b = torch.pdist(rows), torch.pdist(leaves)
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95
    assert rows.std().item() == pytest.approx(adapter.word_embeddings.weight[:99].std().item(), rel=0.05)
    random = VideoAdapter(config(109), codebook, visual_init="random").word_embeddings.weight[100:].detach()
    assert torch.corrcoef(torch.stack([torch.pdist(random), b]))[0, 1] < 0.5


def test_centroid_rows_with_hidden_larger_than_rank():
    rows = centroid_rows(torch.randn(5, 3), hidden_size=8, std=0.02)
    assert rows.shape == (5, 8) and torch.all(rows[:, 3:] == 0)
    assert rows.std().item() == pytest.approx(0.02, rel=1e-4)


def test_vocab_size_must_hold_the_visual_words(codebook):
    with pytest.raises(ValueError, match="cannot hold \\[>\\] and the 9 visual words"):
        VideoAdapter(config(9), codebook)
    with pytest.raises(ValueError, match="needs the codebook"):
        VideoAdapter(config(109))


def test_extending_a_text_checkpoint_keeps_text_rows_and_outputs(codebook, tmp_path):
    """Text checkpoint → video model: text rows are identical and text-only inputs give the same outputs."""
    text_task = PretrainingTask(config(V_TEXT))
    text_task.export_hf(tmp_path / "hf")
    video_task = PretrainingTask(config(109), adapter=partial(VideoAdapter, codebook=codebook), pair_name="align")
    adapter = video_task.encoder.adapter
    theirs, state = read_hf_checkpoint(tmp_path / "hf")
    mapped, _ = hf_to_multibert(state, 2)
    theirs, mapped = adapter.extend_pretrained(theirs, mapped)  # what the task calls before its checks
    assert theirs.vocab_size == 109
    load_into(video_task, mapped, "test")
    W_text = text_task.encoder.adapter.word_embeddings.weight
    W_video = adapter.word_embeddings.weight
    assert torch.equal(W_video[:99], W_text)
    assert torch.equal(video_task.mlm.head.bias[:99], text_task.mlm.head.bias)
    assert torch.all(video_task.mlm.head.bias[99:] == 0)
    # the visual rows were rescaled to the checkpoint's text-row spread
    assert W_video[100:].std().item() == pytest.approx(W_text.std().item(), rel=0.05)
    ids = torch.randint(5, 99, (2, 12))
    batch = TokenBatch(ids, torch.ones_like(ids), torch.zeros_like(ids))
    text_task.eval(), video_task.eval()
    with torch.no_grad():
        torch.testing.assert_close(video_task.encoder(batch).last_hidden_state, text_task.encoder(batch).last_hidden_state)
        text_logits = text_task.mlm.head(text_task.encoder(batch).last_hidden_state)
        video_logits = video_task.mlm.head(video_task.encoder(batch).last_hidden_state)
    torch.testing.assert_close(video_logits[..., :99], text_logits)


def test_extend_refuses_another_vocabulary(codebook, tmp_path):
    PretrainingTask(config(50)).export_hf(tmp_path / "hf")
    adapter = VideoAdapter(config(109), codebook)
    theirs, state = read_hf_checkpoint(tmp_path / "hf")
    with pytest.raises(ValueError, match="checkpoint vocabulary has 50 tokens but this video model's text part has 99"):
        adapter.extend_pretrained(theirs, hf_to_multibert(state, 2)[0])


def test_codebook_travels_with_the_model(codebook):
    a = VideoAdapter(config(109), codebook)
    b = VideoAdapter(config(109), codebook)
    with torch.no_grad():
        b.codebook_level_1.add_(1.0)
    b.load_state_dict(a.state_dict())
    for l in range(2):
        assert torch.equal(getattr(a, f"codebook_level_{l}"), getattr(b, f"codebook_level_{l}"))


def test_init_from_a_text_checkpoint_through_the_task(codebook, tmp_path):
    text_task = PretrainingTask(config(V_TEXT))
    text_task.export_hf(tmp_path / "hf")
    video_task = PretrainingTask(config(109), adapter=partial(VideoAdapter, codebook=codebook), init_from=str(tmp_path / "hf"))
    video_task.load_pretrained(tmp_path / "hf")
    assert torch.equal(video_task.encoder.adapter.word_embeddings.weight[:99], text_task.encoder.adapter.word_embeddings.weight)


def test_paper_initialisation_where_dimensions_allow(tmp_path):
    """D == H: each visual-word row is its leaf centroid, exactly (the paper's); D != H keeps the projection."""
    g = torch.Generator().manual_seed(1)
    book = str(HierarchicalKMeans(depth=2, branching=3).fit(torch.randn(300, 32, generator=g)).save(tmp_path / "b.safetensors"))
    adapter = VideoAdapter(config(109), book)  # hidden 32 == D 32: "auto" → centroids
    assert adapter.visual_init == "centroids"
    assert torch.equal(adapter.word_embeddings.weight[100:].detach(), HierarchicalKMeans.load(book).leaves)
    assert VideoAdapter(config(109), book, visual_init="projected").visual_init == "projected"
    with pytest.raises(ValueError, match="uses the 20-d centroids .* hidden_size is 32"):
        VideoAdapter(config(109), codebook_file(tmp_path), visual_init="centroids")


def codebook_file(tmp_path) -> str:
    g = torch.Generator().manual_seed(0)
    return str(HierarchicalKMeans(depth=2, branching=3).fit(torch.randn(300, D, generator=g)).save(tmp_path / "c.safetensors"))


@pytest.mark.parametrize("hidden_is_d", [True, False])
def test_visual_rows_stay_frozen_through_adamw_while_text_rows_train(tmp_path, hidden_is_d):
    g = torch.Generator().manual_seed(1)
    dim = 32 if hidden_is_d else D
    book = str(HierarchicalKMeans(depth=2, branching=3).fit(torch.randn(300, dim, generator=g)).save(tmp_path / "b.safetensors"))
    task = PretrainingTask(config(109), adapter=partial(VideoAdapter, codebook=book, freeze_visual_words=True),
                           pair_name="align")
    W = task.encoder.adapter.word_embeddings.weight
    before = W.detach().clone()
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.cat([torch.randint(5, 99, (4, 6)), torch.randint(100, 109, (4, 6))], dim=1)  # text and visual words
    labels = ids.clone()
    batch = TokenBatch(ids, torch.ones_like(ids), torch.zeros_like(ids), labels, torch.zeros(4, dtype=torch.long))
    for _ in range(3):
        opt.zero_grad()
        task(batch)[0].loss.backward()
        assert torch.all(W.grad[100:] == 0)
        opt.step()
        task(batch)  # the next forward restores the rows weight decay moved
    assert torch.equal(W[100:].detach(), before[100:])
    assert not torch.equal(W[:99].detach(), before[:99])
    free = VideoAdapter(config(109), book, freeze_visual_words=False)
    assert not hasattr(free, "visual_rows")
    default = VideoAdapter(config(109), book)  # frozen by default only when the rows are the raw centroids
    assert default.freeze_visual_words == hidden_is_d
