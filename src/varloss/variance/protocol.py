"""The reconstruction protocol and the random streams of an evaluation: one owner for both.

**Protocol.** `mean` reconstructs decode(mu), the posterior mean pushed through the decoder
(varloss's default, as before). `sample` reconstructs as the training loss does and as
F. Chollet's Keras VAE does (through its sampling layer): decode(mu + sigma * eps), one
eps ~ N(0, I) per image. A model takes the draws through `reconstruct(x, noise)` (N x
latent_dim); the iterative families (draw, convdraw) use them step by step along their own path.
Reports written before the protocol was recorded were all `mean`: `protocol_of` is the one place
that says so.

**FID mode.** Whether an evaluation computes the FID of its samples: `auto` (only when the data
set's domain classifier is already cached), `on` (train it first if needed), `off`. Train,
correct, study and the pipelines' FID policy (`varloss.quality.policy`) read it from here.

**Streams.** Every random draw of an evaluation comes from a named stream (`Stream`) whose seed
is derived from the run's (or the command's) seed by one rule, `stream_seed`: `train` (its DDP
path included), `measure --model` and `correct` all draw from the same place. Sample i decodes
row i of `Stream.EVALUATION_CODES` (a model decodes given codes through `sample(n, noise=rows)`;
DRAW's codes are its steps' codes, concatenated), and image i's sampled reconstruction takes row
i of `Stream.RECONSTRUCTION_DRAWS`; so `measure --model RUN --seed <the run's seed>` with the
run's protocol, test images and sample count gives RUN/report.json's numbers, and each report
records its stream seeds (`stream_settings`). Rows are drawn NOISE_BLOCK at a time whatever the
batch size (torch's vectorised randn depends on how a stream is cut; `standard_normal_rows`), so
row i is the same in batches of any size and under any world size, and models are evaluated
NOISE_BLOCK images at a time (float32 results of a network depend on its batch size). A plain
`generate(n)` function that takes no codes runs under torch.manual_seed(the evaluation-code
stream's seed) instead. Early stopping's held-out images and posterior draws are the
`VALIDATION_SPLIT` and `VALIDATION_DRAWS` streams; `correct` measures the two-stage sampler's
latent space with `SECOND_STAGE_CODES`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from typing import Any

import torch

from varloss.errors import InputError

__all__ = [
    "FID_MODES",
    "NOISE_BLOCK",
    "NoiseStream",
    "Reconstruction",
    "Stream",
    "epoch_seed",
    "fid_mode",
    "protocol_of",
    "recorded_protocol",
    "prior_generation",
    "sampled_reconstruction",
    "standard_normal_rows",
    "stream_seed",
    "stream_settings",
]

NOISE_BLOCK = 256


class Reconstruction(StrEnum):
    """How a model reconstructs the images it is measured on."""

    MEAN = "mean"
    SAMPLE = "sample"

    @property
    def formula(self) -> str:
        """The reconstruction as a formula, for captions and tables."""
        return "decode(mu)" if self is Reconstruction.MEAN else "decode(mu + sigma * eps)"

    @property
    def description(self) -> str:
        """One phrase for pages and reports."""
        if self is Reconstruction.MEAN:
            return "decode(mu), the posterior mean through the decoder"
        return "decode(mu + sigma * eps), one posterior draw per image"

    @classmethod
    def choices(cls) -> str:
        """Every protocol with its wording, for help texts."""
        return "; ".join(f"{member.value}: {member.description}" for member in cls)

    @classmethod
    def parse(cls, value: Any, name: str = "reconstruction") -> Reconstruction:
        """The protocol named by `value`, or an InputError naming `name` and the choices."""
        try:
            return cls(value.value if isinstance(value, Enum) else value)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise InputError(f"{name} must be one of {choices}, got {value!r}.") from None


DEFAULT_RECONSTRUCTION = Reconstruction.MEAN


def recorded_protocol(record: Mapping[str, Any] | None) -> Reconstruction | None:
    """The protocol a record names: a report (its `settings.evaluation.reconstruction`, or its
    `settings.reconstruction`), a settings mapping or a results row (`reconstruction`); None when
    it names none (`protocol_of` says what that means)."""
    record = record or {}
    settings = record.get("settings") if isinstance(record.get("settings"), Mapping) else {}
    evaluation = (
        settings.get("evaluation") if isinstance(settings.get("evaluation"), Mapping) else {}
    )
    for value in (
        evaluation.get("reconstruction"),
        settings.get("reconstruction"),
        record.get("reconstruction"),
    ):
        if value not in (None, ""):
            return Reconstruction.parse(value)
    return None


def protocol_of(record: Mapping[str, Any] | None) -> Reconstruction:
    """The protocol a record names (`recorded_protocol`), with the one fallback: records written
    before the protocol was recorded were measured with `mean`."""
    return recorded_protocol(record) or DEFAULT_RECONSTRUCTION


# "inception": the FID Inception-v3 of the papers (weights fetched once), instead of the domain
# classifier; `varloss.quality.fid_or_reason` applies the modes.
FID_MODES = ("auto", "on", "off", "inception")


def fid_mode(mode: Any, name: str = "fid") -> str:
    """ "auto" | "on" | "off" | "inception" from a mode or a bool (True -> "on", False ->
    "off"), or an InputError naming `name` (e.g. "--fid") and the choices."""
    if isinstance(mode, bool):
        return "on" if mode else "off"
    if mode not in FID_MODES:
        raise InputError(f"{name} must be one of {', '.join(FID_MODES)}, got {mode!r}.")
    return str(mode)


class Stream(Enum):
    """The named random streams of a run, each with its own index in `stream_seed`'s rule.
    Epochs use their own number (0, 1, ...) as the index: their shuffling and training noise."""

    EVALUATION_CODES = -1  # the prior codes z ~ N(0, I) of generated samples
    RECONSTRUCTION_DRAWS = -2  # eps of sampled reconstructions, one row per image
    VALIDATION_SPLIT = -3  # which training images are held out for early stopping
    VALIDATION_DRAWS = -4  # the posterior draws of the validation loss, the same every epoch
    SECOND_STAGE_CODES = -5  # `correct`: the two-stage sampler's own prior draws, in latent space


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and noise (or of a named stream: `stream_seed`): a
    function of (seed, index) only, so a resumed run draws exactly what an uninterrupted one
    would, and every command derives the same stream from the same seed."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def stream_seed(seed: int, stream: Stream) -> int:
    """The seed of one named stream of `seed`: the one rule every command uses."""
    return epoch_seed(seed, stream.value)


def standard_normal_rows(
    n: int, width: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n x width float32 draws of N(0, 1) from `generator`, drawn NOISE_BLOCK rows at a time: the
    rows a fresh generator gives are those of `NoiseStream` (and of any other split of n)."""
    blocks = -(-int(n) // NOISE_BLOCK)
    rows = [torch.randn(NOISE_BLOCK, int(width), generator=generator) for _ in range(blocks)]
    return torch.cat(rows)[: int(n)] if rows else torch.empty(0, int(width))


class NoiseStream:
    """N(0, I) rows of `width` from a CPU generator seeded with `seed`, handed out in order and
    drawn NOISE_BLOCK rows at a time (how the rows are asked for does not change them)."""

    def __init__(self, seed: int, width: int) -> None:
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.width = int(width)
        self.left = torch.empty(0, self.width)

    @classmethod
    def named(cls, seed: int, stream: Stream, width: int) -> NoiseStream:
        """The stream `stream` of a run or command seeded with `seed`."""
        return cls(stream_seed(seed, stream), width)

    def take(self, n: int) -> torch.Tensor:
        """The next `n` rows."""
        missing = max(int(n) - self.left.shape[0], 0)
        whole_blocks = -(-missing // NOISE_BLOCK) * NOISE_BLOCK
        drawn = standard_normal_rows(whole_blocks, self.width, self.generator)
        rows = torch.cat([self.left, drawn]) if missing else self.left
        self.left = rows[n:]
        return rows[:n]


def sampled_reconstruction(model: Any, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> model.reconstruct(x, noise)` with noise N x latent_dim taken in order from the
    reconstruction-draw stream of `seed` (`Stream.RECONSTRUCTION_DRAWS`): the same images in the
    same order get the same draws, in batches of any size."""
    reconstruct = getattr(model, "reconstruct", None)
    latent_dim = getattr(model, "latent_dim", None)
    if not (callable(reconstruct) and _takes_noise(reconstruct) and isinstance(latent_dim, int)):
        raise InputError(
            f"reconstruction 'sample' needs a model with latent_dim and reconstruct(x, noise) "
            f"(a varloss VAE); {type(model).__name__} has not: use reconstruction 'mean'."
        )
    draws = NoiseStream.named(seed, Stream.RECONSTRUCTION_DRAWS, latent_dim)

    def reconstruct_sampled(x: torch.Tensor) -> torch.Tensor:
        return reconstruct(x, noise=draws.take(x.shape[0]).to(x.device))

    reconstruct_sampled.__qualname__ = f"{type(model).__name__}.reconstruct(x, noise)"
    return reconstruct_sampled


def prior_generation(
    generate: Callable[..., Any], seed: int, latent_dim: Any
) -> Callable[[int], Any] | None:
    """`n -> generate(n, noise=codes)` with the codes (n x latent_dim) taken in order from the
    evaluation-code stream of `seed` (`Stream.EVALUATION_CODES`), when `generate` takes `noise`
    (a model's `sample`: a varloss VAE, DRAW and ConvDRAW included, or an adapter) and the model's
    latent_dim is known: sample i is decode(row i), as `varloss train` evaluates it. None for
    other functions: the caller runs those under torch.manual_seed(stream_seed(seed,
    Stream.EVALUATION_CODES)) (`codes_seed`), reproducible but drawn as the function draws."""
    if not (_takes_noise(generate) and isinstance(latent_dim, int)):
        return None
    codes = NoiseStream.named(seed, Stream.EVALUATION_CODES, latent_dim)

    def generate_from_stream(n: int) -> Any:
        return generate(n, noise=codes.take(n))

    owner = getattr(generate, "__self__", None)
    name = getattr(generate, "__name__", "generate")
    owned = f"{type(owner).__name__}.{name}" if owner is not None else name
    generate_from_stream.__qualname__ = f"{owned}(n, noise)"
    return generate_from_stream


def stream_settings(reconstruction: Any, seed: int) -> dict[str, Any]:
    """What a report records about its protocol and draws, the same for `train` and `measure`:
    the protocol, its wording, and the stream seeds its draws came from (`reconstruction_seed`
    only for `sample`)."""
    protocol = Reconstruction.parse(reconstruction)
    sampled = protocol is Reconstruction.SAMPLE
    return {
        "reconstruction": protocol.value,
        "reconstructions": protocol.description,
        "reconstruction_seed": stream_seed(seed, Stream.RECONSTRUCTION_DRAWS) if sampled else None,
        "codes_seed": stream_seed(seed, Stream.EVALUATION_CODES),
    }


def _takes_noise(function: Callable[..., Any]) -> bool:
    try:
        return "noise" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
