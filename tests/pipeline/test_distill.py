from __future__ import annotations

import pytest
import torch

from ladabert.pipeline.distill import attention_kl, augment_tokens, neighbor_table

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


def test_neighbor_table_picks_nearest_tokens_of_the_same_kind():
    tokens = ["[PAD]", "[unused0]", "good", "great", "bad", "##s", "##es", "awful"]
    e = torch.tensor(
        [
            [0.0, 0.0, 1.0],  # [PAD]
            [1.0, 0.0, 0.01],  # [unused0]: as close to "good" as can be, but never a neighbor
            [1.0, 0.0, 0.0],  # good
            [0.9, 0.1, 0.0],  # great
            [-1.0, 0.0, 0.0],  # bad
            [1.0, 0.02, 0.0],  # ##s: nearest to "good" by far, but a continuation
            [0.9, 0.0, 0.1],  # ##es
            [-0.9, 0.1, 0.0],  # awful
        ]
    )
    table = neighbor_table(e, tokens, k=2, chunk=3)  # chunks smaller than the vocabulary
    assert table.shape == (8, 2)
    assert table[2].tolist() == [3, 7]  # good -> great, then the nearer of the two other words
    assert table[4, 0] == 7 and table[7, 0] == 4  # bad <-> awful
    assert table[5].tolist() == [6, 5]  # ##s has one other continuation; the rest falls back to itself
    assert table[0].tolist() == [0, 0] and table[1].tolist() == [1, 1]  # bracketed tokens stay as they are
    words = {2, 3, 4, 7}
    for t in words:
        assert set(table[t].tolist()) <= words | {t}
    with pytest.raises(ValueError, match="8 embedding rows but 7 tokens"):
        neighbor_table(e, tokens[:-1])


def test_augmentation_swaps_to_neighbors():
    ids, attn = _batch()
    specials = torch.tensor([PAD, CLS, SEP, MASK])
    table = torch.arange(1000)[:, None] + torch.tensor([[1000, 2000]])  # token t -> t + 1000 or t + 2000
    out = augment_tokens(ids, attn, specials, MASK, 0.3, torch.Generator().manual_seed(1), neighbors=table)
    changed = out != ids
    assert not changed[0::2].any()
    swapped = changed & (out != MASK)
    assert swapped.sum() > 50
    delta = (out - ids)[swapped]
    assert torch.isin(delta, torch.tensor([1000, 2000])).all()  # every swap is one of the token's neighbors
    assert (delta == 1000).any() and (delta == 2000).any()


def test_augment_swap_setting_is_checked():
    from ladabert.pipeline.compress import CompressConfig

    assert CompressConfig(augment_swap="neighbors").augment_swap == "neighbors"
    with pytest.raises(ValueError, match="augment_swap must be one of"):
        CompressConfig(augment_swap="glove")


def test_length_weighted_sampler_draws_in_proportion_to_length_power():
    from ladabert.pipeline.distill import length_weighted_sampler

    torch.manual_seed(0)
    lengths = [2, 4, 8, 2]
    draws = torch.tensor([i for _ in range(1000) for i in length_weighted_sampler(lengths, 1.0)])
    assert len(draws) == 4000
    share = torch.bincount(draws, minlength=4).double() / len(draws)
    assert torch.allclose(share, torch.tensor([2.0, 4, 8, 2], dtype=torch.float64) / 16, atol=0.02), share
    draws = torch.tensor([i for _ in range(1000) for i in length_weighted_sampler(lengths, 2.0)])
    share = torch.bincount(draws, minlength=4).double() / len(draws)
    assert torch.allclose(share, torch.tensor([4.0, 16, 64, 4], dtype=torch.float64) / 88, atol=0.02), share
    draws = torch.tensor([i for _ in range(1000) for i in length_weighted_sampler(lengths, 0.0)])
    assert torch.allclose(
        torch.bincount(draws).double() / len(draws), torch.full((4,), 0.25, dtype=torch.float64), atol=0.02
    )


def test_length_weight_setting_is_checked():
    from ladabert.pipeline.compress import CompressConfig
    from ladabert.pipeline.distill import length_weighted_sampler

    with pytest.raises(ValueError, match="length_weight must be >= 0"):
        CompressConfig(length_weight=-1.0)
    with pytest.raises(ValueError, match="length_weight must be >= 0"):
        length_weighted_sampler([3, 4], -0.5)
    with pytest.raises(ValueError, match="at least one token"):
        length_weighted_sampler([3, 0], 1.0)


def test_attention_kl_is_zero_for_equal_maps_and_matches_a_hand_computed_kl():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    key_bias = (1 - mask[:, None, None, :].float()) * -1e9

    def maps(scale: float) -> tuple[torch.Tensor, ...]:
        return tuple(torch.softmax(scale * torch.randn(2, 3, 4, 4) + key_bias, -1) for _ in range(2))

    t, s = maps(1.0), maps(2.0)
    assert attention_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    # Reference: the mean over layers of the mean over (example, head, real query row) of sum_k p log(p / q).
    ref = []
    for a, b in zip(s, t):
        rows = [
            (b[i, h, q] * (b[i, h, q].clamp_min(1e-12).log() - a[i, h, q].clamp_min(1e-12).log())).sum()
            for i in range(2)
            for h in range(3)
            for q in range(4)
            if mask[i, q]
        ]
        ref.append(torch.stack(rows).mean())
    got = attention_kl(s, t, mask)
    assert got.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-5)
    assert got.item() > 0.01
    # A padded query row does not count, whatever its attention.
    s_pad = tuple(x.clone() for x in s)
    s_pad[0][0, :, 3] = torch.softmax(torch.randn(3, 4), -1)
    assert attention_kl(s_pad, t, mask).item() == pytest.approx(got.item(), rel=1e-6)


def test_attention_kl_refuses_maps_of_other_shapes():
    a = (torch.full((1, 2, 3, 3), 1 / 3),)
    with pytest.raises(ValueError, match="mapped to the teacher"):
        attention_kl(a, (torch.full((1, 4, 3, 3), 1 / 3),), None)
    with pytest.raises(ValueError, match="attention maps"):
        attention_kl(a, a + a, None)
