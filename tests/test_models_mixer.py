"""The mixer's options compute what the issue specifies, checked against direct loop formulas."""
import torch
import torch.nn.functional as F

from pretrain.models.mixer import MaskedMatrix, TokenMixing, shifted_copies
from test_models_variants import tiny_config

T, D = 6, 8


def _mixing(**overrides):
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer", d_model=D, n_ctx=T, **overrides)
    return TokenMixing(cfg).double()


def test_flat_mixing_is_a_causal_matrix_over_the_sequence_with_position_bias():
    mix = _mixing()
    x = torch.randn(2, T, D, dtype=torch.double)
    w, b = mix.mix.weight[0, 0, 0], mix.mix.bias[0, 0]
    expected = torch.zeros_like(x)
    for i in range(T):
        for j in range(i + 1):
            expected[:, i] += w[i, j] * x[:, j]
        expected[:, i] += b[i]
    assert torch.allclose(mix(x), expected)


def test_kernel_taps_mix_shifted_features():
    k = 3
    mix = _mixing(kernel=k)
    x = torch.randn(1, T, D, dtype=torch.double)
    w, b = mix.mix.weight[0, 0], mix.mix.bias[0, 0]  # w [k, T, T]
    pad = (k - 1) // 2
    expected = torch.zeros_like(x)
    for i in range(T):
        for c in range(D):
            total = b[i].clone()
            for o in range(k):
                src = c + o - pad
                if 0 <= src < D:
                    total = total + sum(w[o, i, j] * x[0, j, src] for j in range(i + 1))
            expected[0, i, c] = total
    assert torch.allclose(mix(x), expected)
    # even kernels: the extra tap reaches to the right, as Conv1d(padding="same") does
    assert torch.equal(shifted_copies(torch.arange(4.0).view(1, 4), 2), torch.tensor([[0., 1, 2, 3], [1, 2, 3, 0]]))


def test_expansion_is_two_masked_stages_with_gelu_between():
    e = 2
    mix = _mixing(expansion=e)
    x = torch.randn(1, T, D, dtype=torch.double)
    w1, b1 = mix.expand.weight[0, :, 0], mix.expand.bias[0]      # [e, T, T], [e, T]
    w2, b2 = mix.contract.weight[0, 0], mix.contract.bias[0, 0]  # [e, T, T], [T]
    mask = torch.ones(T, T, dtype=torch.double).tril()
    hidden = F.gelu(torch.stack([(w1[s] * mask) @ x[0] + b1[s, :, None] for s in range(e)]))
    expected = sum((w2[s] * mask) @ hidden[s] for s in range(e)) + b2[:, None]
    assert torch.allclose(mix(x)[0], expected)
    linear = _mixing(expansion=1, linear=True)  # the linear mixer keeps no activation between
    y = linear(x)
    assert torch.allclose(linear(2 * x) - linear(x), y - linear(torch.zeros_like(x)))


def test_heads_project_mix_per_head_and_recombine():
    h = 2
    mix = _mixing(heads=h)
    x = torch.randn(1, T, D, dtype=torch.double)
    mask = torch.ones(T, T, dtype=torch.double).tril()
    projected = mix.head_in(x)[0]
    parts = []
    for head in range(h):
        w, b = mix.mix.weight[head, 0, 0], mix.mix.bias[head, 0]
        cols = projected[:, head * D // h:(head + 1) * D // h]  # = Linear(d, d/h) of this head
        parts.append((w * mask) @ cols + b[:, None])
    assert torch.allclose(mix(x)[0], mix.head_out(torch.cat(parts, dim=-1)))


def test_shorter_inputs_use_the_leading_sub_block():
    m = MaskedMatrix(n_ctx=T).double()
    x = torch.randn(1, 1, 4, D, dtype=torch.double)
    expected = (m.weight[0, 0, 0, :4, :4] * torch.ones(4, 4, dtype=torch.double).tril()) @ x[0, 0]
    assert torch.allclose(m(x)[0, 0], expected + m.bias[0, 0, :4, None])
