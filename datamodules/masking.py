"""BERT's masked-LM corruption (Devlin et al., 2019; Google's ``create_pretraining_data.py``).

Of the maskable positions, ``round(mask_prob · n)`` (at least 1, at most ``max_predictions``) are chosen —
an exact count per sequence, as in Google's data generator, rather than an independent coin per token. Each chosen
position becomes ``[MASK]`` with probability 0.8, a random token with 0.1, and stays unchanged with 0.1; its label
is the original id, every other label is ``IGNORE_INDEX``. With whole-word masking, positions are chosen a word
at a time (a word = a piece plus the ``##`` continuation pieces after it), the 80/10/10 draw still per piece.

A sequence that mixes vocabularies (VideoBERT's text and visual words) is masked jointly — one share of all its
maskable positions, as the paper masks the joint sequence — while each random replacement is drawn from the pool of
its own position's group (``replacement_groups``), so a replaced visual word stays a visual word.
"""

from __future__ import annotations

import numpy as np

from multibert.core.batch import IGNORE_INDEX


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    maskable: np.ndarray,
    replacement_ids: np.ndarray,
    mask_prob: float = 0.15,
    max_predictions: int | None = None,
    word_starts: np.ndarray | None = None,
    replacement_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one sequence for masked-LM.

    Args:
        ids: token ids of the sequence.
        rng: the generator that decides everything (seed it per example for reproducible masks).
        mask_token_id: id of ``[MASK]``.
        maskable: True where a position may be chosen (False for ``[CLS]``, ``[SEP]``, padding, ...).
        replacement_ids: ids the 10 % random replacements are drawn from (uniformly); with
            ``replacement_groups``, one array of ids per group.
        mask_prob: share of maskable positions to predict.
        max_predictions: cap on predicted positions per sequence (Google: 20 at length 128).
        word_starts: True where a word starts; enables whole-word masking.
        replacement_groups: (T,) group of each position (an index into ``replacement_ids``): a replaced position
            draws from its own group's pool. ``None``: one pool for all.

    Returns:
        ``(corrupted ids, labels)``, both the shape of ``ids``.

    Shapes:
        ids, maskable, word_starts, replacement_groups: (T,) → (T,), (T,).
    """
    ids = np.asarray(ids)
    labels = np.full_like(ids, IGNORE_INDEX)
    candidates = np.flatnonzero(maskable)
    if candidates.size == 0:
        return ids.copy(), labels
    n_predict = max(1, int(round(candidates.size * mask_prob)))
    if max_predictions is not None:
        n_predict = min(n_predict, max_predictions)

    if word_starts is None:
        chosen = rng.choice(candidates, size=n_predict, replace=False)
    else:
        # group the maskable positions into words; a group starts at a word start or after a non-maskable gap
        starts = np.asarray(word_starts)[candidates] | np.r_[True, np.diff(candidates) > 1]
        words = np.split(candidates, np.flatnonzero(starts)[1:])
        picked: list[np.ndarray] = []
        count = 0
        for w in rng.permutation(len(words)):
            if count >= n_predict:
                break
            if count + len(words[w]) > n_predict:
                continue  # as in Google's generator: skip a word that would overshoot the budget
            picked.append(words[w])
            count += len(words[w])
        chosen = np.concatenate(picked) if picked else rng.choice(candidates, size=1)

    out = ids.copy()
    labels[chosen] = ids[chosen]
    draw = rng.random(chosen.size)
    to_mask = chosen[draw < 0.8]
    to_random = chosen[(draw >= 0.8) & (draw < 0.9)]
    out[to_mask] = mask_token_id
    if replacement_groups is None:
        out[to_random] = rng.choice(replacement_ids, size=to_random.size)
    else:
        groups = np.asarray(replacement_groups)[to_random]
        for g in np.unique(groups):
            at = to_random[groups == g]
            out[at] = rng.choice(replacement_ids[int(g)], size=at.size)
    return out, labels
