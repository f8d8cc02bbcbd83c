from __future__ import annotations

import pytest
import torch

from ladabert.pipeline.distill import augment_tokens

MASK, CLS, SEP, PAD = 4, 2, 3, 0


def _batch(rows: int = 64, length: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (rows, length), generator=g)
    lengths = torch.randint(5, length + 1, (rows,), generator=g)
    attn = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    ids[attn == 0] = PAD
    return ids, attn


def test_augmentation_replaces_real_tokens_of_odd_examples_only():
    ids, attn = _batch()
    specials = torch.tensor([PAD, CLS, SEP, MASK])
    out = augment_tokens(ids, attn, specials, MASK, 0.3, torch.Generator().manual_seed(1))
    changed = out != ids
    assert not changed[0::2].any()  # even examples are kept as they are
    real = attn.bool() & ~torch.isin(ids, specials)
    assert not (changed & ~real).any()  # padding, [CLS] and [SEP] are never touched
    share = changed[1::2].sum() / real[1::2].sum()
    assert 0.2 < share < 0.32, share  # about p (a swap may draw the same token)
    masked = (out == MASK) & changed
    assert 0.35 < masked.sum() / changed.sum() < 0.65  # half masks, half swaps
    swapped = out[changed & ~masked]
    assert torch.isin(swapped, ids[real]).all()  # swaps draw from the batch's own real tokens
    assert torch.equal(ids, _batch()[0])  # the input is not modified in place


def test_augmentation_off_is_the_identity():
    ids, attn = _batch()
    assert augment_tokens(ids, attn, torch.tensor([PAD, CLS, SEP]), MASK, 0.0) is ids


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_augment_setting_is_checked(bad):
    from ladabert.pipeline.compress import CompressConfig

    with pytest.raises(ValueError, match="augment must be >= 0 and <= 1"):
        CompressConfig(augment=bad)
