"""Hugging Face BERT checkpoints in and out, through one explicit key map with shape checks.

Our layout (the state dict of any task that holds an ``encoder`` and, optionally, the pretraining objectives)::

    encoder.adapter.{word,position,token_type}_embeddings.weight   bert.embeddings.*
    encoder.adapter.LayerNorm.{weight,bias}                        bert.embeddings.LayerNorm.*
    encoder.backbone.blocks.{i}.attn.qkv.{weight,bias}             bert.encoder.layer.{i}.attention.self.{query,key,value}.*  (concatenated)
    encoder.backbone.blocks.{i}.attn.proj.*                        bert.encoder.layer.{i}.attention.output.dense.*
    encoder.backbone.blocks.{i}.attn_norm.*                        bert.encoder.layer.{i}.attention.output.LayerNorm.*
    encoder.backbone.blocks.{i}.mlp.fc.*                           bert.encoder.layer.{i}.intermediate.dense.*
    encoder.backbone.blocks.{i}.mlp.proj.*                         bert.encoder.layer.{i}.output.dense.*
    encoder.backbone.blocks.{i}.mlp_norm.*                         bert.encoder.layer.{i}.output.LayerNorm.*
    encoder.pooler.dense.*                                         bert.pooler.dense.*
    mlm.head.{dense,LayerNorm}.*                                   cls.predictions.transform.{dense,LayerNorm}.*
    mlm.head.bias                                                  cls.predictions.bias
    pair.head.classifier.*                                         cls.seq_relationship.*

The MLM decoder weight is the word embedding (tied) and is never stored twice. Checkpoints saved from a bare
``BertModel`` (no ``bert.`` prefix) and TensorFlow-era names (``gamma`` / ``beta``) are accepted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multibert.core.config import BertConfig

log = logging.getLogger(__name__)

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
_BLOCK = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.fc",
    "output.dense": "mlp.proj",
    "output.LayerNorm": "mlp_norm",
}
_HEADS = {
    "bert.pooler.dense": "encoder.pooler.dense",
    "cls.predictions.transform.dense": "mlm.head.dense",
    "cls.predictions.transform.LayerNorm": "mlm.head.LayerNorm",
    "cls.seq_relationship": "pair.head.classifier",
}
#: Architecture fields that must agree between a checkpoint and the config it is loaded into.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
)


def read_hf_config(directory: str | Path) -> BertConfig:
    """The encoder sizes of a Hugging Face BERT directory (its ``config.json``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; a Hugging Face BERT directory needs one")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type", "bert") != "bert":
        raise ValueError(f"{config_file}: model_type={hf_config['model_type']!r}, expected 'bert'")
    return BertConfig.from_hf_dict(hf_config)


def read_hf_checkpoint(directory: str | Path) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """Read a Hugging Face BERT directory: ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).

    The ``.bin`` fallback is read with ``weights_only=True``, so it cannot run code.
    """
    directory = Path(directory)
    config = read_hf_config(directory)
    if (directory / "model.safetensors").is_file():
        state = load_file(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    return config, state


def architecture_differences(ours: BertConfig, theirs: BertConfig) -> dict[str, tuple[object, object]]:
    """``{field: (ours, theirs)}`` for the fields that shape the weights and differ."""
    return {
        name: (getattr(ours, name), getattr(theirs, name))
        for name in ARCHITECTURE_FIELDS
        if getattr(ours, name) != getattr(theirs, name)
    }


def check_architecture(ours: BertConfig, theirs: BertConfig, source: str, vocab_hint: str | None = None) -> None:
    """Raise if the fields that shape the weights differ, naming each field, both values and the flag to set.

    Args:
        vocab_hint: what to do about a different ``vocab_size`` (default: pass the checkpoint directory's vocab.txt).
    """
    diffs = architecture_differences(ours, theirs)
    if diffs:
        parts = [
            f"{name}: config has {a!r}, checkpoint has {b!r}" + ("" if name == "vocab_size" else f" (--model.init_args.config.{name})")
            for name, (a, b) in diffs.items()
        ]
        hint = ""
        if "vocab_size" in diffs:
            vocab_hint = vocab_hint or f"tokenize with the checkpoint's vocabulary (--data.vocab_file {source}/vocab.txt)"
            hint = f"; for vocab_size, {vocab_hint}"
        if len(diffs) > (1 if "vocab_size" in diffs else 0):
            hint += (
                "; remove the sizes from the config (they are then read from the checkpoint) or set them to the "
                "checkpoint's; model.init_args.init_partial: true loads only the tensors whose shapes match"
            )
        raise ValueError(f"checkpoint {source} does not match the model config: " + "; ".join(parts) + hint)


def _normalise_hf_key(key: str) -> str:
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.startswith(("embeddings.", "encoder.", "pooler.")):  # saved from a bare BertModel
        key = "bert." + key
    return key


def hf_to_multibert(state: dict[str, torch.Tensor], num_layers: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a Hugging Face BERT state dict to ours. Returns the mapped dict and the HF keys left unused."""
    state = {_normalise_hf_key(k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(hf: str, ours: str) -> None:
        if hf in state:
            out[ours] = state[hf]
            used.add(hf)

    for name in _EMBEDDINGS:
        for p in ("weight", "bias"):
            take(f"bert.embeddings.{name}.{p}", f"encoder.adapter.{name}.{p}")
    for i in range(num_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.backbone.blocks.{i}."
        for p in ("weight", "bias"):
            qkv = [f"{hf}attention.self.{n}.{p}" for n in ("query", "key", "value")]
            if all(k in state for k in qkv):
                out[f"{ours}attn.qkv.{p}"] = torch.cat([state[k] for k in qkv], dim=0)
                used.update(qkv)
            for hf_name, our_name in _BLOCK.items():
                take(f"{hf}{hf_name}.{p}", f"{ours}{our_name}.{p}")
    for hf_name, our_name in _HEADS.items():
        for p in ("weight", "bias"):
            take(f"{hf_name}.{p}", f"{our_name}.{p}")
    take("cls.predictions.bias", "mlm.head.bias")
    # tied to the word embedding (weight) and to cls.predictions.bias (bias): nothing of their own to load
    used.update(k for k in state if k.startswith("cls.predictions.decoder.") or k.endswith("position_ids"))
    return out, sorted(set(state) - used)


def multibert_to_hf(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_to_multibert` for the keys our state dict holds."""
    out: dict[str, torch.Tensor] = {}

    def give(ours: str, hf: str) -> None:
        if ours in state:
            out[hf] = state[ours].detach().cpu().contiguous()

    for name in _EMBEDDINGS:
        for p in ("weight", "bias"):
            give(f"encoder.adapter.{name}.{p}", f"bert.embeddings.{name}.{p}")
    for i in range(num_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.backbone.blocks.{i}."
        for p in ("weight", "bias"):
            if f"{ours}attn.qkv.{p}" in state:
                q, k, v = state[f"{ours}attn.qkv.{p}"].detach().cpu().chunk(3, dim=0)
                for n, t in zip(("query", "key", "value"), (q, k, v)):
                    out[f"{hf}attention.self.{n}.{p}"] = t.contiguous()
            for hf_name, our_name in _BLOCK.items():
                give(f"{ours}{our_name}.{p}", f"{hf}{hf_name}.{p}")
    for hf_name, our_name in _HEADS.items():
        for p in ("weight", "bias"):
            give(f"{our_name}.{p}", f"{hf_name}.{p}")
    give("mlm.head.bias", "cls.predictions.bias")
    return out


def load_into(module: torch.nn.Module, mapped: dict[str, torch.Tensor], source: str, partial: bool = False) -> list[str]:
    """Copy mapped tensors into ``module`` with a shape check per key; return our keys the checkpoint lacked.

    With ``partial`` a tensor whose shape differs is skipped (and returned among the missing keys) instead of
    failing the load.
    """
    own = module.state_dict()
    unknown = sorted(set(mapped) - set(own))
    if unknown:
        raise KeyError(f"{source}: keys with no place in the model: {unknown[:8]}")
    for key, value in list(mapped.items()):
        if own[key].shape != value.shape:
            if not partial:
                raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
            mapped = {k: v for k, v in mapped.items() if k != key}
    module.load_state_dict(mapped, strict=False)
    tied = {"mlm.head.decoder.weight"}
    return sorted(k for k in set(own) - set(mapped) - tied if not k.startswith("teacher."))


def save_hf_checkpoint(
    module: torch.nn.Module,
    config: BertConfig,
    directory: str | Path,
    vocab_file: str | Path | None = None,
    lowercase: bool = True,
    model_card: str | None = None,
) -> Path:
    """Write a Hugging Face BERT directory that ``BertForPreTraining`` and ``AutoTokenizer`` load.

    Files: ``config.json``, ``model.safetensors``; with a vocabulary also ``vocab.txt`` and the tokenizer
    (:func:`save_hf_tokenizer`); with ``model_card`` a ``README.md``. Every file is readable by others as the
    umask allows (safetensors alone writes 0600).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = multibert_to_hf(module.state_dict(), config.num_hidden_layers)
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise ValueError("only models with a text-style token embedding export to Hugging Face BERT")
    written = [directory / "config.json", directory / "model.safetensors"]
    written[0].write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    save_file(state, written[1], metadata={"format": "pt"})
    if vocab_file is not None:
        shutil.copyfile(vocab_file, directory / "vocab.txt")
        written += save_hf_tokenizer(directory, lowercase, config.max_position_embeddings)
        written.append(directory / "vocab.txt")
    if model_card is not None:
        written.append(directory / "README.md")
        written[-1].write_text(model_card, encoding="utf-8")
    _make_readable(written)
    log.info("exported %d tensors to %s", len(state), directory)
    return directory


#: BERT's special tokens, by their role in ``tokenizer_config.json``.
SPECIAL_ROLES = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
_UNUSED = re.compile(r"^\[unused\d+\]$")


def save_hf_tokenizer(directory: Path, lowercase: bool, model_max_length: int) -> list[Path]:
    """The tokenizer of ``directory/vocab.txt`` as ``tokenizers`` and ``transformers`` save one.

    ``tokenizer.json`` (the fast tokenizer, with its casing), ``tokenizer_config.json`` (``do_lower_case``,
    ``model_max_length``, special tokens) and ``special_tokens_map.json``. Bracketed tokens beyond BERT's five,
    such as VideoBERT's ``[>]`` and visual words ``[VW0]`` ..., become additional special tokens, so that text
    holding them is never split into pieces (BERT's ``[unusedN]`` placeholders stay ordinary tokens).
    """
    from tokenizers import BertWordPieceTokenizer

    vocab = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    missing = [t for t in SPECIAL_ROLES.values() if t not in vocab]
    if missing:
        raise ValueError(f"{directory / 'vocab.txt'} lacks BERT's special tokens {missing}")
    extra = [
        t for t in vocab
        if len(t) > 2 and t.startswith("[") and t.endswith("]") and t not in SPECIAL_ROLES.values() and not _UNUSED.match(t)
    ]
    tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lowercase)
    if extra:
        tokenizer.add_special_tokens(extra)
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {**SPECIAL_ROLES, **({"additional_special_tokens": extra} if extra else {})}
    settings = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": None,  # follows do_lower_case, as in BERT
        "tokenize_chinese_chars": True,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    files = [directory / "tokenizer.json", directory / "tokenizer_config.json", directory / "special_tokens_map.json"]
    files[1].write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files[2].write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return files


def _make_readable(paths: list[Path]) -> None:
    """Mode 0666 less the umask (0644 usually), as files written by ``open`` get."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)
