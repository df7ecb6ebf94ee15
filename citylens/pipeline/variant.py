"""Analysis variants: one explainer + layer + target + image set + threshold applied to one run.

Every artefact of an analysis (mask store, t-SNE, object ratios, recovery, residuals, figures) lives under
`<run>/analysis/<variant name>/`, so variants of one run coexist and a new one overwrites nothing. The name
is derived from the settings that change the masks or the ratios, so the same settings always land in the
same folder and different settings never share one (docs/variants.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from citylens.core.run_folder import ANALYSIS_DIR, variant_dirs

TARGETS = ("label", "prediction")
IMAGE_SETS = ("all", "correct")
__all__ = ["ANALYSIS_DIR", "IMAGE_SETS", "TARGETS", "Variant", "list_variants"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Variant:
    """The settings of one analysis of a run.

    explainer: a registered explainer name (`gradcam`, `layercam`, ...) or the class path an explainer
      config names as `_target_` (`citylens.explain.LayerCAM`); stored as the registered name.
    layer: a layer preset (`last_block`, `last_conv`, ...) or a dotted module path.
    target: `label` explains each image's true city (what R_p^c groups by), `prediction` its argmax.
    images: `all` test images, or only the `correct`ly classified ones, in the object ratios.
    threshold: the explanation threshold on the mask in [0, 1].
    options: an attribution explainer's options (`explainer.options`: baseline, n_steps, fill, ...), kept as
      sorted (key, value) pairs with the explainer's defaults filled in; none for a CAM.
    """

    explainer: str = "gradcam"
    layer: str = "last_block"
    target: str = "label"
    images: str = "all"
    threshold: float = 0.5
    options: Any = ()

    def __post_init__(self) -> None:
        from citylens.explain.attribution import INPUT_LAYER
        from citylens.explain.explanation import validate_threshold
        from citylens.explain.methods import check_explainer_options, explainer_name, is_attribution

        object.__setattr__(self, "explainer", explainer_name(self.explainer))
        given = dict(self.options or {})
        object.__setattr__(
            self, "options", tuple(sorted(check_explainer_options(self.explainer, given).items()))
        )
        object.__setattr__(self, "layer", str(self.layer))
        object.__setattr__(self, "threshold", validate_threshold(self.threshold))
        if self.target not in TARGETS:
            raise ValueError(f"analysis.target: must be one of {list(TARGETS)}, got {self.target!r}")
        if self.images not in IMAGE_SETS:
            raise ValueError(f"analysis.images: must be one of {list(IMAGE_SETS)}, got {self.images!r}")
        if not self.layer:
            raise ValueError("explainer.layer: must name a layer preset or a dotted module path, got ''")
        if is_attribution(self.explainer) != (self.layer == INPUT_LAYER):
            raise ValueError(
                f"explainer.layer: {self.layer!r} with explainer {self.explainer}; the attribution "
                f"explainers (ig, ixg, smoothgrad, occlusion, shapley) take {INPUT_LAYER!r}, a CAM a layer"
            )

    @property
    def name(self) -> str:
        """Folder name, e.g. `gradcam-last_block-label-all-t0.5` (`gradcam++` becomes `gradcampp`); an
        attribution explainer's options that differ from its defaults follow its name (ig_baseline_black)."""
        explainer = self.explainer.replace("+", "p") + "".join(
            f"_{key}_{value:g}" if isinstance(value, float) else f"_{key}_{value}"
            for key, value in self.changed_options().items()
        )
        parts = [explainer, self.layer, self.target, self.images, f"t{self.threshold:g}"]
        return "-".join(_UNSAFE.sub("_", p) for p in parts)

    def dir(self, run_dir: Path | str) -> Path:
        """Where this variant's artefacts of the run in `run_dir` live."""
        return Path(run_dir) / ANALYSIS_DIR / self.name

    def changed_options(self) -> dict[str, Any]:
        """The options that differ from the explainer's defaults, by key."""
        from citylens.explain.methods import check_explainer_options

        defaults = check_explainer_options(self.explainer, None)
        return {k: v for k, v in self.options if v != defaults.get(k)}

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, recorded in the mask store's provenance (options only when the
        explainer has any, so a CAM variant's provenance is what it always was)."""
        values = {**asdict(self), "variant": self.name}
        options = values.pop("options")
        return {**values, "options": dict(options)} if options else values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Variant:
        """The variant a store's provenance records (unknown keys are ignored, missing ones default)."""
        keys = ("explainer", "layer", "target", "images", "threshold", "options")
        return cls(**{k: values[k] for k in keys if k in values})


def list_variants(run_dir: Path | str) -> list[str]:
    """Names of the variants a run holds (folders under `<run>/analysis/` with a mask store), sorted."""
    return [p.name for p in variant_dirs(run_dir)]
