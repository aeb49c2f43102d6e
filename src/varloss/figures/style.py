"""How a model family looks in every figure: its colour, its marker and its label, in one place,
so that the study figure and the spectrum figure (and anything drawn later) agree.

Colours stay the seed's: dense blue, ResNet-like red, convolutional green, iterative (DRAW and
ConvDRAW) yellow; each family has its own marker, so DRAW and ConvDRAW (both yellow) are told
apart by shape. Families of one's own (plugins) get a colour and a marker the built-in ones do
not use, chosen by name so that a family looks the same from study to study.
"""

from __future__ import annotations

from dataclasses import dataclass

from varloss._hashing import sha256_json

__all__ = [
    "FAMILY_COLOURS",
    "FAMILY_LABELS",
    "FAMILY_MARKERS",
    "FamilyStyle",
    "family_colour",
    "family_style",
]

# The seed's colours: dense blue, ResNet red, convolutional green, iterative (DRAW/GQN) yellow.
FAMILY_COLOURS = {
    "dense": "#1f5fbf",
    "resnet": "#d62728",
    "conv": "#2ca02c",
    "draw": "#f2c500",
    "convdraw": "#f2c500",
}
# One matplotlib marker per built-in family: circle, square, triangle, diamond, plus (filled).
FAMILY_MARKERS = {"dense": "o", "conv": "s", "resnet": "^", "draw": "D", "convdraw": "P"}
FAMILY_LABELS = {
    "dense": "dense",
    "conv": "convolutional",
    "resnet": "ResNet-like",
    "draw": "DRAW (iterative)",
    "convdraw": "ConvDRAW (iterative)",
}
# Families of one's own: colours and markers the built-in families do not use.
_EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_EXTRA_MARKERS = ("v", "X", "*", "h", "p", "<", ">")
# Yellow on white needs a dark edge (and dark tick labels) to be seen.
_DARK_EDGE = {"#f2c500": "#5a4a00"}


@dataclass(frozen=True)
class FamilyStyle:
    """How one family is drawn: face colour, marker, edge colour (dark for light colours), label,
    and the colour its text takes (its own, or the dark edge where its own is too light)."""

    colour: str
    marker: str
    edge: str
    label: str

    @property
    def text_colour(self) -> str:
        return self.edge if self.colour in _DARK_EDGE else self.colour


def _by_name(family: str, choices: tuple[str, ...]) -> str:
    return choices[int(sha256_json(family), 16) % len(choices)]


def family_colour(family: str) -> str:
    """The seed's colour of a built-in family, else a stable colour from the name."""
    return FAMILY_COLOURS.get(family) or _by_name(family, _EXTRA_COLOURS)


def family_style(family: str) -> FamilyStyle:
    """The colour, marker, edge and label of `family` (built-in, or stable by name)."""
    colour = family_colour(family)
    return FamilyStyle(
        colour=colour,
        marker=FAMILY_MARKERS.get(family) or _by_name(family, _EXTRA_MARKERS),
        edge=_DARK_EDGE.get(colour, "#222222"),
        label=FAMILY_LABELS.get(family, family),
    )
