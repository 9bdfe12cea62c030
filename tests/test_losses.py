"""The five GAN objectives against hand formulas and the reference's theory (Goodfellow 2014)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import jensenshannon

from gancore.losses import REGISTRY, boundary, get_loss, is_saturating, is_sigmoid, spec, without_boundary
from gancore.names import LOSSES
from gancore.objectives import gradient_penalty, minimax_value

L_REAL = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)
L_FAKE = torch.tensor([-3.0, 1.5, 0.0, -0.25], dtype=torch.float64)


def _log_sigmoid_naive(x: torch.Tensor) -> torch.Tensor:
    # The textbook form: exact in float64 for these moderate logits, used as the hand formula.
    return torch.log(1 / (1 + torch.exp(-x)))


def _hand(name: str, l_real: torch.Tensor, l_fake: torch.Tensor) -> tuple[float, float]:
    d_x, d_gz = 1 / (1 + torch.exp(-l_real)), 1 / (1 + torch.exp(-l_fake))
    if name == "minimax":
        return -(torch.log(d_x).mean() + torch.log(1 - d_gz).mean()).item(), torch.log(1 - d_gz).mean().item()
    if name == "non_saturating":
        return -(torch.log(d_x).mean() + torch.log(1 - d_gz).mean()).item(), -torch.log(d_gz).mean().item()
    if name == "wasserstein_gp":
        return (l_fake.mean() - l_real.mean()).item(), -l_fake.mean().item()
    if name == "hinge":
        d = sum(max(0.0, 1 - r) for r in l_real.tolist()) / 4 + sum(max(0.0, 1 + f) for f in l_fake.tolist()) / 4
        return d, -l_fake.mean().item()
    if name == "least_squares":
        d = 0.5 * ((l_real - 1) ** 2).mean() + 0.5 * (l_fake**2).mean()
        return d.item(), (0.5 * ((l_fake - 1) ** 2).mean()).item()
    raise AssertionError(name)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("column", [False, True], ids=["[B]", "[B,1]"])
def test_values_match_hand_formulas(name, column):
    loss = get_loss(name)
    l_real, l_fake = (L_REAL[:, None], L_FAKE[:, None]) if column else (L_REAL, L_FAKE)
    want_d, want_g = _hand(name, L_REAL, L_FAKE)
    # float64 throughout: agreement to rounding error of a few operations.
    assert loss.d(l_real, l_fake).item() == pytest.approx(want_d, rel=1e-12, abs=1e-12)
    assert loss.g(l_fake).item() == pytest.approx(want_g, rel=1e-12, abs=1e-12)


def test_bad_logit_shape_is_refused():
    with pytest.raises(ValueError, match=r"\[B\] or \[B, 1\]"):
        get_loss("hinge").g(torch.zeros(4, 2))


def test_unknown_loss_names_the_allowed_ones():
    with pytest.raises(ValueError, match="minimax, non_saturating"):
        get_loss("wgan")


def test_only_wasserstein_gp_asks_for_a_penalty():
    assert get_loss("wasserstein_gp", gp_weight=5.0).gp_weight == 5.0
    assert all(get_loss(n, gp_weight=5.0).gp_weight == 0.0 for n in LOSSES if n != "wasserstein_gp")


@pytest.mark.parametrize("name", LOSSES)
def test_finite_losses_and_gradients_at_extreme_logits(name):
    loss = get_loss(name)
    for dtype in (torch.float32, torch.bfloat16):
        l_real = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0], dtype=dtype, requires_grad=True)
        l_fake = torch.tensor([1000.0, 1000.0, -1000.0, -1000.0], dtype=dtype, requires_grad=True)
        d = loss.d(l_real, l_fake)
        g = loss.g(l_fake)
        grads = torch.autograd.grad(d + g, (l_real, l_fake))
        assert torch.isfinite(d) and torch.isfinite(g), (dtype, d, g)
        assert all(torch.isfinite(t).all() for t in grads), (dtype, grads)


def test_minimax_at_equilibrium_is_log4():
    # D(x) = D(G(z)) = 1/2 <=> logits 0: V = 2 log(1/2) = -log 4, and D's loss is -V.
    zeros = torch.zeros(16, dtype=torch.float64)
    assert get_loss("minimax").d(zeros, zeros).item() == pytest.approx(math.log(4), rel=1e-15)
    assert minimax_value(zeros, zeros).item() == pytest.approx(-math.log(4), rel=1e-15)


def test_minimax_value_is_the_reference_objective():
    want = (_log_sigmoid_naive(L_REAL).mean() + torch.log(1 - torch.sigmoid(L_FAKE)).mean()).item()
    assert minimax_value(L_REAL, L_FAKE).item() == pytest.approx(want, rel=1e-12)
    # Where the naive form overflows to -inf, the softplus form still gives the exact value -1000.
    assert minimax_value(torch.tensor([-1000.0]), torch.tensor([-50.0])).item() == pytest.approx(-1000.0, rel=1e-6)


def test_optimal_discriminator_gives_minus_log4_plus_2_jsd():
    # Discrete p_data, p_g on 4 points, probabilities in eighths so that batches realise the
    # expectations exactly: x appears 8 * p(x) times in each batch.
    p_data = torch.tensor([4, 2, 1, 1], dtype=torch.float64) / 8
    p_g = torch.tensor([1, 1, 2, 4], dtype=torch.float64) / 8
    logit = torch.log(p_data) - torch.log(p_g)  # D*(x) = p_data / (p_data + p_g)
    real = torch.repeat_interleave(torch.arange(4), (p_data * 8).long())
    fake = torch.repeat_interleave(torch.arange(4), (p_g * 8).long())
    v_star = minimax_value(logit[real], logit[fake]).item()
    jsd = jensenshannon(p_data.numpy(), p_g.numpy()) ** 2  # natural log: JSD in nats
    assert v_star == pytest.approx(-math.log(4) + 2 * jsd, rel=1e-12)
    assert get_loss("minimax").d(logit[real], logit[fake]).item() == pytest.approx(-v_star, rel=1e-12)
    # D* maximises V: any other discriminator scores lower.
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = logit + 0.3 * torch.randn(4, generator=gen, dtype=torch.float64)
        assert minimax_value(other[real], other[fake]).item() < v_star


def test_gradient_penalty_vanishes_for_unit_norm_linear_critic():
    w = torch.tensor([0.6, 0.0, -0.8, 0.0])  # ||w|| = 1: grad_x (w.x + b) = w everywhere
    critic = torch.nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(w[None])
    real, fake = torch.randn(32, 4), torch.randn(32, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        critic.weight.mul_(3.0)  # ||grad|| = 3 -> (3 - 1)^2 = 4 at every interpolate
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(4.0, rel=1e-6)


def test_gradient_penalty_is_differentiable_and_seeded():
    critic = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.randn(16, 3), torch.randn(16, 3)
    a = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    b = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.backward()
    assert critic[0].weight.grad is not None and critic[0].weight.grad.abs().sum() > 0


def _grad_of_g_loss(name: str, logit: float) -> float:
    l_fake = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(get_loss(name).g(l_fake), l_fake)
    return grad.item()


def test_saturating_generator_gradient_vanishes_non_saturating_does_not():
    # When D confidently rejects fakes (l_fake -> -inf), d/dl log(1 - sigmoid(l)) = -sigmoid(l) -> 0
    # while d/dl -log sigmoid(l) = -sigmoid(-l) -> -1: the reference's vanishing-gradient point.
    for logit in (-5.0, -10.0, -20.0):
        assert _grad_of_g_loss("minimax", logit) == pytest.approx(-1 / (1 + math.exp(-logit)), rel=1e-9)
        assert _grad_of_g_loss("non_saturating", logit) == pytest.approx(-1 / (1 + math.exp(logit)), rel=1e-9)
    assert abs(_grad_of_g_loss("minimax", -30.0)) < 1e-12
    assert _grad_of_g_loss("non_saturating", -30.0) == pytest.approx(-1.0, rel=1e-12)


# -- the registry: one entry per loss, and what the diagnostics read from it ---------------------


def test_the_registry_holds_exactly_the_names_params_accept():
    assert tuple(REGISTRY) == LOSSES


@pytest.mark.parametrize("name", LOSSES)
def test_sigmoid_flag_means_the_d_loss_is_log4_where_d_says_one_half(name):
    """The diagnostics read 'sigmoid' as: D(x) = sigmoid(logit), equilibrium at D = 1/2 with D's
    loss log 4. That holds for the flagged losses and for no other (hinge: 2, LS: 1/2, W: 0)."""
    zero = torch.zeros(8)
    at_half = REGISTRY[name].d(zero, zero).item()
    assert (abs(at_half - math.log(4)) < 1e-6) == is_sigmoid(name)


@pytest.mark.parametrize("name", [n for n in LOSSES if is_sigmoid(n)])
def test_saturating_flag_means_g_gets_no_gradient_where_d_rejects_the_fakes(name):
    """Where D is sure the fakes are fake (logit -10, D = 4.5e-5), a saturating G objective has a
    gradient of about sigmoid(-10) per sample; the non-saturating one of about 1."""
    logits = torch.full((4,), -10.0, requires_grad=True)
    (grad,) = torch.autograd.grad(REGISTRY[name].g(logits), logits)
    per_sample = grad.abs().mean().item() * 4
    assert (per_sample < 1e-3) == is_saturating(name)
    assert per_sample < 1e-3 or per_sample > 0.99


@pytest.mark.parametrize("name", LOSSES)
def test_the_decision_boundary_is_where_d_settles_when_it_cannot_tell_real_from_fake(name):
    """r_t and the diagnosis's "called real" threshold D's output at its boundary. Derived here from
    each objective: a D that gives real and fake the same output l minimises d(l, l), and the
    boundary is the middle of the minimisers (logistic: 0; hinge: any l in [-1, 1], middle 0;
    least squares: 0.5). Where d(l, l) is the same for every l (Wasserstein) there is none: a
    constant added to the critic changes neither its loss nor its gradient penalty."""
    grid = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    values = torch.stack([REGISTRY[name].d(v.expand(2), v.expand(2)) for v in grid])
    best = grid[values <= values.min() + 1e-12]
    if len(best) == len(grid):
        assert boundary(name) is None and name in without_boundary()
        real, fake = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
        assert REGISTRY[name].d(real + 7.0, fake + 7.0).item() == pytest.approx(REGISTRY[name].d(real, fake).item(), abs=1e-12)
        critic = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
        shifted = lambda x: critic(x) + 7.0  # noqa: E731
        x_real, x_fake = torch.randn(8, 3), torch.randn(8, 3)
        penalties = [gradient_penalty(c, x_real, x_fake, torch.Generator().manual_seed(0)).item() for c in (critic, shifted)]
        assert penalties[0] == penalties[1]  # the same graph but for the added constant: the same gradient
    else:
        assert boundary(name) == pytest.approx(float(best.min() + best.max()) / 2, abs=1e-3)


def test_names_the_registry_does_not_hold_are_neither_sigmoid_nor_saturating():
    assert not is_sigmoid("an_old_loss") and not is_saturating(None) and spec("an_old_loss") is None
    assert boundary("an_old_loss") == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_each_registered_objective_resolves_and_is_a_train_dependency(name):
    """The registry names its objectives as module:function; train imports them by name, so its
    DVC dependencies must include their modules (gancore.codedeps reads the same names)."""
    from gancore import codedeps
    from gancore.config import Params

    entry = REGISTRY[name]
    assert callable(entry.d) and callable(entry.g)
    for reference in (entry.d_objective, entry.g_objective):
        path = reference.partition(":")[0].replace(".", "/") + ".py"
        assert path in codedeps.stage_deps("train")
    schema = Params.model_json_schema()["$defs"]["LossParams"]["properties"]["name"]
    assert tuple(schema["enum"]) == tuple(REGISTRY)  # the Prefect form's choices
