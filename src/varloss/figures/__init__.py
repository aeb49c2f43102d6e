"""Every matplotlib figure varloss draws, one module per kind.

- `maps`: per-pixel variance maps and where variance is lost (`variance_maps_figure`,
  `plot_variance_maps`, `map_image`, `variance_map_panels`).
- `grids`: labelled rows of images (`save_image_grid`).
- `study`: variance loss against MSE across runs, one panel per data set (`plot_study`).
- `style`: how a model family looks in every figure, its colour, marker and label
  (`family_style`, `family_colour`, `FAMILY_COLOURS`, `FAMILY_MARKERS`, `FAMILY_LABELS`).
- `base`: the headless backend (`pyplot`) and the atomic writer (`save_figure`).

Figures read plain numbers and arrays, and a study's typed records (`varloss.records`); they
import nothing above the records layer, never a pipeline.
"""

from varloss.figures.base import pyplot, save_figure
from varloss.figures.grids import save_image_grid
from varloss.figures.maps import (
    VARIANCE_MAP_KEYS,
    map_image,
    plot_variance_maps,
    variance_map_panels,
    variance_maps_figure,
)
from varloss.figures.study import plot_study
from varloss.figures.style import (
    FAMILY_COLOURS,
    FAMILY_LABELS,
    FAMILY_MARKERS,
    FamilyStyle,
    family_colour,
    family_style,
)

__all__ = [
    "FAMILY_COLOURS",
    "FAMILY_LABELS",
    "FAMILY_MARKERS",
    "FamilyStyle",
    "VARIANCE_MAP_KEYS",
    "family_colour",
    "family_style",
    "map_image",
    "plot_study",
    "plot_variance_maps",
    "pyplot",
    "save_figure",
    "save_image_grid",
    "variance_map_panels",
    "variance_maps_figure",
]
