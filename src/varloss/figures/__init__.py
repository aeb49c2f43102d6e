"""Every matplotlib figure varloss draws, one module per kind.

- `maps`: per-pixel variance maps and where variance is lost (`variance_maps_figure`,
  `plot_variance_maps`, `map_image`, `variance_map_panels`).
- `grids`: labelled rows of images (`save_image_grid`).
- `study`: variance loss against MSE across runs, coloured by family (`plot_study`,
  `family_colour`, `FAMILY_COLOURS`).
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
from varloss.figures.study import FAMILY_COLOURS, FAMILY_LABELS, family_colour, plot_study

__all__ = [
    "FAMILY_COLOURS",
    "FAMILY_LABELS",
    "VARIANCE_MAP_KEYS",
    "family_colour",
    "map_image",
    "plot_study",
    "plot_variance_maps",
    "pyplot",
    "save_figure",
    "save_image_grid",
    "variance_map_panels",
    "variance_maps_figure",
]
