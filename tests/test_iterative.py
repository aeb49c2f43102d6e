"""The iterative-VAE base (`varloss.models.iterative`): DRAW and ConvDRAW run one shared loop.

The loop is checked against the two recurrences written out here step by step from the papers
(Gregor et al. 2015 for DRAW, 2016 for convolutional DRAW) over the models' own modules: with the
same weights and noise the outputs are bitwise equal. The parameter names are pinned so that
weights saved before the base existed keep loading.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varloss.errors import InputError
from varloss.losses import gaussian_kl
from varloss.models import create_model
from varloss.models.convdraw import ConvDrawVAE
from varloss.models.draw import DrawVAE
from varloss.models.iterative import IterativeVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = {
    "draw, attentive reads and writes": (
        "draw",
        (2, 9, 8),
        6,
        {
            "hidden": 12,
            "read_attention": True,
            "write_attention": True,
            "read_size": 3,
            "write_size": 4,
        },
    ),
    "draw, whole images": ("draw", (3, 8, 8), 6, {"hidden": 10}),
    "convdraw, scale 4": (
        "convdraw",
        (1, 28, 28),
        16,
        {"hidden_channels": 8, "canvas_channels": 6, "feature_channels": 5},
    ),
    "convdraw, scale 1": (
        "convdraw",
        (3, 8, 8),
        12,
        {"scale": 1, "hidden_channels": 4, "canvas_channels": 3, "feature_channels": 4},
    ),
}


def _draw_reference(model: DrawVAE, x: torch.Tensor, z_of) -> tuple:
    """DRAW's recurrence (Gregor et al. 2015, eqs. 3-8) written out: z_t = z_of(t, mu, logvar)."""
    n, hidden = x.shape[0], model.config.hidden
    h_enc = c_enc = h_dec = c_dec = x.new_zeros(n, hidden)
    canvas = torch.zeros_like(x)
    mus, logvars = [], []
    for t in range(model.steps):
        x_err = x - torch.sigmoid(canvas)
        r = model._read(x, x_err, h_dec)
        h_enc, c_enc = model.encoder_cell(torch.cat([r, h_dec], 1), (h_enc, c_enc))
        mu, logvar = model.to_posterior(h_enc).chunk(2, dim=1)
        h_dec, c_dec = model.decoder_cell(z_of(t, mu, logvar), (h_dec, c_dec))
        canvas = canvas + model._write(h_dec)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus, 1), torch.cat(logvars, 1), canvas


def _convdraw_reference(model: ConvDrawVAE, x: torch.Tensor, z_of) -> tuple:
    """Convolutional DRAW's recurrence at the working resolution, then the upsampler."""
    config, n = model.config, x.shape[0]
    zeros = x.new_zeros(n, config.hidden_channels, *model.working_shape)
    h_enc = c_enc = h_dec = c_dec = zeros
    canvas = x.new_zeros(n, config.canvas_channels, *model.working_shape)
    features = model.embed(x)
    mus, logvars = [], []
    for t in range(model.steps):
        h_enc, c_enc = model.encoder_cell(torch.cat([features, h_dec, canvas], 1), (h_enc, c_enc))
        posterior = model.to_posterior(h_enc)
        mu, logvar = F.adaptive_avg_pool2d(posterior, model.latent_shape[1:]).chunk(2, dim=1)
        z_up = F.interpolate(z_of(t, mu, logvar), size=model.working_shape, mode="nearest")
        h_dec, c_dec = model.decoder_cell(z_up, (h_dec, c_dec))
        canvas = canvas + model.to_canvas(h_dec)
        mus.append(mu.flatten(1))
        logvars.append(logvar.flatten(1))
    return torch.cat(mus, 1), torch.cat(logvars, 1), model.upsampler(canvas)


def _reference(model, x: torch.Tensor, noise: torch.Tensor | str | None) -> tuple:
    """(mu, logvar, logits) of the written-out recurrence: z_t = mu_t without `noise`, else drawn
    along the sampled path with eps_t from step t's slice of `noise`, or from the global RNG
    (`noise="rng"`, one standard-normal draw per step, as training does)."""

    def z_of(t: int, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if noise is None:
            return mu
        if isinstance(noise, str):
            eps = torch.randn_like(mu)
        else:
            eps = noise.chunk(model.steps, dim=1)[t].reshape(mu.shape)
        return mu + eps * torch.exp(0.5 * logvar)

    run = _draw_reference if isinstance(model, DrawVAE) else _convdraw_reference
    return run(model, x, z_of)


def _decode_reference(model, z: torch.Tensor) -> torch.Tensor:
    """The decoder alone over the codes' T steps (what `decode` runs)."""
    n = z.shape[0]
    if isinstance(model, DrawVAE):
        h = c = z.new_zeros(n, model.config.hidden)
        canvas = z.new_zeros(n, *model.image_shape)
        for z_t in z.view(n, model.steps, model.step_dim).unbind(1):
            h, c = model.decoder_cell(z_t, (h, c))
            canvas = canvas + model._write(h)
        return torch.sigmoid(canvas)
    h = c = z.new_zeros(n, model.config.hidden_channels, *model.working_shape)
    canvas = z.new_zeros(n, model.config.canvas_channels, *model.working_shape)
    for z_t in z.view(n, model.steps, *model.latent_shape).unbind(1):
        z_up = F.interpolate(z_t, size=model.working_shape, mode="nearest")
        h, c = model.decoder_cell(z_up, (h, c))
        canvas = canvas + model.to_canvas(h)
    return torch.sigmoid(model.upsampler(canvas))


@pytest.mark.parametrize("case", list(CASES))
def test_the_shared_loop_equals_each_family_recurrence_bitwise(case: str) -> None:
    family, shape, latent, options = CASES[case]
    torch.manual_seed(3)
    model = create_model(family, shape, latent, **options)
    assert isinstance(model, IterativeVAE)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(5, latent, generator=torch.Generator().manual_seed(2))
    codes = torch.randn(4, latent, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mu, logvar, logits = _reference(model, x, None)
        encoded = model.encode(x)
        assert torch.equal(encoded[0], mu) and torch.equal(encoded[1], logvar)
        assert torch.equal(model.reconstruct(x), torch.sigmoid(logits))
        sampled_path = torch.sigmoid(_reference(model, x, noise)[2])
        assert torch.equal(model.reconstruct(x, noise), sampled_path)
        assert not torch.equal(sampled_path, torch.sigmoid(logits))  # the noise was used
        samples = model.sample(4, generator=torch.Generator().manual_seed(5))
        assert torch.equal(samples, _decode_reference(model, codes))
    # forward: one posterior draw per step from the global RNG, in step order
    torch.manual_seed(7)
    terms = model(x)
    torch.manual_seed(7)
    mu, logvar, logits = _reference(model, x, "rng")
    assert torch.equal(terms.x_hat, torch.sigmoid(logits))
    assert torch.equal(terms.kl, gaussian_kl(mu, logvar).mean())
    assert torch.equal(terms.loss, model.loss_terms(x, logits, gaussian_kl(mu, logvar)).loss)


# The parameter names and shapes of the models above, listed on main before the iterative base
# existed (`[(k, tuple(v.shape)) for k, v in model.state_dict().items()]`): saved weights load.
DRAW_PARAMETERS = [
    ("reader.params.weight", (5, 12)),
    ("reader.params.bias", (5,)),
    ("writer.params.weight", (5, 12)),
    ("writer.params.bias", (5,)),
    ("write_patch.weight", (32, 12)),
    ("write_patch.bias", (32,)),
    ("encoder_cell.weight_ih", (48, 48)),
    ("encoder_cell.weight_hh", (48, 12)),
    ("encoder_cell.bias_ih", (48,)),
    ("encoder_cell.bias_hh", (48,)),
    ("to_posterior.weight", (2, 12)),
    ("to_posterior.bias", (2,)),
    ("decoder_cell.weight_ih", (48, 1)),
    ("decoder_cell.weight_hh", (48, 12)),
    ("decoder_cell.bias_ih", (48,)),
    ("decoder_cell.bias_hh", (48,)),
]
CONVDRAW_PARAMETERS = [
    ("embed.0.weight", (5, 1, 4, 4)),
    ("embed.0.bias", (5,)),
    ("embed.2.weight", (5, 5, 4, 4)),
    ("embed.2.bias", (5,)),
    ("embed.4.weight", (5, 5, 3, 3)),
    ("embed.4.bias", (5,)),
    ("encoder_cell.gates.weight", (32, 27, 3, 3)),
    ("encoder_cell.gates.bias", (32,)),
    ("to_posterior.weight", (4, 8, 3, 3)),
    ("to_posterior.bias", (4,)),
    ("decoder_cell.gates.weight", (32, 10, 3, 3)),
    ("decoder_cell.gates.bias", (32,)),
    ("to_canvas.weight", (6, 8, 3, 3)),
    ("to_canvas.bias", (6,)),
    ("upsampler.0.weight", (6, 6, 4, 4)),
    ("upsampler.0.bias", (6,)),
    ("upsampler.2.weight", (6, 1, 4, 4)),
    ("upsampler.2.bias", (1,)),
]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("draw, attentive reads and writes", DRAW_PARAMETERS),
        ("convdraw, scale 4", CONVDRAW_PARAMETERS),
    ],
)
def test_parameter_names_are_those_saved_weights_have(case: str, expected: list) -> None:
    family, shape, latent, options = CASES[case]
    model = create_model(family, shape, latent, **options)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


@pytest.mark.parametrize(("family", "most"), [("draw", 10), ("convdraw", 8)])
def test_steps_are_resolved_and_checked_once_for_both_families(family: str, most: int) -> None:
    # 2520 = lcm(1..10): every count up to `most` divides it, so auto picks the family's most.
    assert create_model(family, (1, 8, 8), 2520).config.steps == most
    assert create_model(family, (1, 8, 8), 14).config.steps == 7
    with pytest.raises(InputError, match=f"{family} steps must divide latent_dim 12"):
        create_model(family, (1, 8, 8), 12, steps=5)
