"""Mixed precision is chosen by what the hardware does natively, and the cheap dropout keeps the recipe."""
import pytest
import torch

from trainables.dropout import ATTENTION, CheapDropout, cheap_dropout, keep_mask, use_cheap_dropout
from trainables.errors import UserError
from trainables.models import load_encoder
from trainables.precision import autocast, cpu_flags, resolve_precision

AMX_CPU = {"fpu", "avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}
AVX512_BF16_CPU = {"fpu", "avx512f", "avx512_bf16"}
OLD_CPU = {"fpu", "sse4_2", "avx2", "fma"}


@pytest.mark.parametrize("flags, expected", [(AMX_CPU, "bf16"), (AVX512_BF16_CPU, "bf16"), (OLD_CPU, "fp32"),
                                             (set(), "fp32")])
def test_auto_picks_bf16_only_on_a_cpu_that_has_it(flags, expected):
    assert resolve_precision("auto", "cpu", flags=flags) == expected


def test_an_explicit_precision_is_kept_and_a_wrong_one_refused():
    assert resolve_precision("fp32", "cpu", flags=AMX_CPU) == "fp32"
    assert resolve_precision("bf16", "cpu", flags=OLD_CPU) == "bf16"
    with pytest.raises(UserError, match="fp16"):
        resolve_precision("fp16", "cpu")


def test_this_machines_flags_are_read():
    flags = cpu_flags()
    assert resolve_precision("auto", "cpu") == ("bf16" if {"amx_bf16", "avx512_bf16"} & flags else "fp32")


def test_autocast_runs_matmuls_in_bf16_and_fp32_is_untouched():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_masks_keep_the_rate(p):
    torch.manual_seed(0)
    kept = keep_mask(torch.Size([2000, 1000]), p).float().mean().item()
    assert abs(kept - (1 - p)) < 0.002          # 2M draws: the standard error is 0.0003


def test_cheap_dropout_is_seeded_scaled_and_its_gradient_uses_the_same_mask():
    x = torch.rand(64, 128, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    torch.manual_seed(7)
    y = cheap_dropout(x, 0.1, True)
    torch.manual_seed(7)
    assert torch.equal(y, cheap_dropout(x.detach(), 0.1, True))
    kept = y.detach() != 0
    assert torch.allclose(y.detach()[kept], x.detach()[kept] / 0.9)
    y.sum().backward()
    assert torch.equal(x.grad, kept.double() / 0.9)
    assert cheap_dropout(x, 0.1, False) is x


def test_the_encoder_with_cheap_dropout_computes_what_it_did_and_masks_padding():
    tokenizer, encoder = load_encoder("smoke")
    batch = tokenizer(["a short one", "a much longer sentence that needs many more tokens than the first"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        before = encoder(**batch).last_hidden_state
        use_cheap_dropout(encoder)
        after = encoder(**batch).last_hidden_state
        alone = encoder(**tokenizer(["a short one"], return_tensors="pt")).last_hidden_state
    assert encoder.config._attn_implementation == ATTENTION
    # embeddings + per layer: attention probabilities (its module holds p), attention output, feed-forward output
    assert sum(isinstance(m, CheapDropout) for m in encoder.modules()) == 1 + 3 * encoder.config.num_hidden_layers
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    # padding changes nothing for the short sentence: the additive mask reached the attention
    torch.testing.assert_close(after[0, :alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)
