"""``multibert export``: a training checkpoint → a complete Hugging Face BERT directory.

The directory holds ``config.json`` and ``model.safetensors`` (``BertForPreTraining.from_pretrained`` loads them),
the tokenizer as ``tokenizers`` / ``transformers`` write one (``vocab.txt``, ``tokenizer.json``,
``tokenizer_config.json`` with the casing the model was trained with, ``model_max_length`` and the special tokens,
VideoBERT's visual words included; ``AutoTokenizer.from_pretrained`` loads it), and a model card (``README.md``:
what was trained on what, with the run's config).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from multibert.core.checkpoint import RUN_KEY, checkpoint_vocab, read_checkpoint
from multibert.core.task import EncoderTask


def export_checkpoint(*, checkpoint: str, out: str, vocab_file: str | None = None, lowercase: bool | None = None) -> None:
    """Export a training checkpoint as a Hugging Face BERT directory (weights, config, tokenizer, model card).

    Args:
        checkpoint: a ``.ckpt`` written by ``multibert fit``.
        out: the directory to write.
        vocab_file: the vocabulary to copy; by default the one stored in the checkpoint.
        lowercase: whether the tokenizer lower-cases; by default the data setting the model was trained with.
    """
    task = EncoderTask.from_checkpoint(checkpoint)
    ckpt = read_checkpoint(checkpoint, mmap=True)
    data_hparams = ckpt.get("datamodule_hyper_parameters") or {}
    if lowercase is None:
        lowercase = bool(data_hparams.get("lowercase", True))
    if vocab_file is None:
        text = checkpoint_vocab(ckpt)
        if text is not None:
            vocab_file = str(Path(tempfile.mkdtemp()) / "vocab.txt")
            Path(vocab_file).write_text(text, encoding="utf-8")
    card = model_card(checkpoint, ckpt, task, lowercase, Path(out).name)
    task.export_hf(out, vocab_file, lowercase=lowercase, model_card=card)
    print(f"exported {checkpoint} → {out}" + ("" if vocab_file else " (no vocabulary: pass --vocab_file)"))


def model_card(checkpoint: str, ckpt: dict[str, Any], task: EncoderTask, lowercase: bool, name: str) -> str:
    """The ``README.md`` of an export: the model, the data it was trained on, the training state and the config."""
    c = task.config
    record = ckpt.get(RUN_KEY) or {}
    config_text = record.get("config")
    run_config = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if config_text is None and run_config.is_file():
        config_text = run_config.read_text(encoding="utf-8")
    data = record.get("data") or (yaml.safe_load(config_text).get("data") if config_text else None)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [bert, multibert]",
        "---",
        f"# {name}",
        "",
        f"A BERT encoder trained with multibert (`{type(task).__module__}.{type(task).__name__}`), "
        f"exported from `{checkpoint}` after {ckpt.get('global_step', '?')} optimizer steps "
        f"({int(ckpt.get('epoch', 0)) + 1} epoch(s) begun).",
        "",
    ]
    if record.get("synthetic_data"):
        lines += [f"**Trained on SYNTHETIC data:** {record['synthetic_data']}. Not a model of real data.", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| layers × hidden (heads) | {c.num_hidden_layers} × {c.hidden_size} ({c.num_attention_heads}) |",
        f"| feed-forward, activation | {c.intermediate_size}, {c.hidden_act} |",
        f"| vocabulary | {c.vocab_size} WordPiece tokens, {'uncased' if lowercase else 'cased'} |",
        f"| longest sequence | {c.max_position_embeddings} tokens |",
    ]
    for key, state in (ckpt.get("callbacks") or {}).items():
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_score") is not None:
            lines.append(f"| best `{state['monitor']}` | {float(state['best_model_score']):.4f} |")
    lines.append("")
    if data:
        lines += ["## Training data", "", f"`{data.get('class_path', '?')}` with", "", "```yaml",
                  yaml.safe_dump(data.get("init_args") or {}, sort_keys=False).rstrip(), "```", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoTokenizer, BertForPreTraining",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = BertForPreTraining.from_pretrained("{name}")',
        "```",
        "",
    ]
    if config_text:
        lines += ["## The run's config", "", "`multibert fit -c config.yaml` with this file reruns it.", "",
                  "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(lines)
