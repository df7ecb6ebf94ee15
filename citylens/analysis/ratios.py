"""Object ratios R_p^c (paper Sec. 2.3, Eq. 1): how much of each object the explanations of a city cover.

R_p^c = sum_i M_{p,i} / sum_i N_{p,i} over city c's test images i, where N_{p,i} counts pixels of ADE20K
object p in image i and M_{p,i} those of them inside the explanation (mask >= threshold). Objects are kept
where their average pixel count per image of the city exceeds 100 (docs/paper.md). Counting is a bincount over
(place, object, threshold level) per block of pixels: no per-image Python loop. Counts are kept per test
place (a panorama; an image on synthetic data), so the 95% interval of each ratio resamples places with all
their views (docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import entropy

from citylens.analysis.stats import ratio_ci
from citylens.core.ade20k import ADE20K_CLASSES, UNLABELLED, class_index

N_CLASSES = len(ADE20K_CLASSES)
TABLE_COLUMNS = [
    "threshold",
    "city",
    "object",
    "object_id",
    "ratio",
    "explained_pixels",
    "total_pixels",
    "mean_pixels",
    "kept",
    "ci_low",
    "ci_high",
]
_BLOCK_PIXELS = 1 << 22


def _thresholds(threshold: float | Sequence[float]) -> list[float]:
    """Validate one threshold or several; keep the caller's order."""
    values = [threshold] if np.ndim(threshold) == 0 else list(np.ravel(threshold))
    if not values:
        raise ValueError("analysis.threshold: at least one threshold is needed")
    out = []
    for t in values:
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"analysis.threshold must be in [0, 1], got {t}")
        out.append(t)
    if len(set(out)) != len(out):
        raise ValueError(f"analysis.threshold: duplicate thresholds in {out}")
    return out


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


class RatioAccumulator:
    """Streams chunks of (masks, label maps, cities, places) into per-place, per-object pixel counts.

    Counts are exact integers, so any chunking gives the same table as one pass over all images. Without
    places, a city's images count as one unit (no intervals then).
    """

    def __init__(self, thresholds: float | Sequence[float], min_mean_pixels: float = 100) -> None:
        self.thresholds = _thresholds(thresholds)
        self.min_mean_pixels = float(min_mean_pixels)
        order = np.argsort(self.thresholds)
        self._sorted = [self.thresholds[i] for i in order]
        self._rank = np.argsort(order)
        self.cities: list[str] = []
        self._city_index: dict[str, int] = {}
        self._unit_index: dict[tuple[str, str | None], int] = {}
        self._unit_city = np.zeros(0, dtype=np.int64)
        self._without_places = False
        t = len(self.thresholds)
        self._images = np.zeros(0, dtype=np.int64)
        self._total = np.zeros((0, N_CLASSES), dtype=np.int64)
        self._explained = np.zeros((0, N_CLASSES, t), dtype=np.int64)

    def _register(self, units: Sequence[tuple[str, str | None]]) -> np.ndarray:
        """Global indices of (city, place) units, adding the new ones (and their cities).

        The count arrays grow by doubling, so streaming many places costs amortised constant copies."""
        new = [u for u in units if u not in self._unit_index]
        for city, _ in new:
            if city not in self._city_index:
                self._city_index[city] = len(self.cities)
                self.cities.append(city)
                self._images = np.append(self._images, 0)
        for u in new:
            self._unit_index[u] = len(self._unit_index)
        n = len(self._unit_index)
        if n > len(self._total):
            grow = max(n, 2 * len(self._total)) - len(self._total)
            self._unit_city = np.concatenate([self._unit_city, np.full(grow, -1, np.int64)])
            self._total = np.concatenate([self._total, np.zeros((grow, N_CLASSES), np.int64)])
            self._explained = np.concatenate(
                [self._explained, np.zeros((grow,) + self._explained.shape[1:], np.int64)]
            )
        for city, place in new:
            self._unit_city[self._unit_index[(city, place)]] = self._city_index[city]
        return np.array([self._unit_index[u] for u in units], dtype=np.int64)

    def update(
        self,
        masks: np.ndarray | torch.Tensor,
        label_maps: np.ndarray | torch.Tensor,
        cities: Sequence[str],
        places: Sequence[str] | None = None,
    ) -> None:
        """Add one chunk: masks (n,H,W) in [0,1], label maps (n,H,W) ADE20K indices or 255, n city names and
        (for intervals) n place ids."""
        m, lab = _tensor(masks), _tensor(label_maps)
        cities = [str(c) for c in cities]
        if m.ndim != 3 or tuple(m.shape) != tuple(lab.shape):
            raise ValueError(f"masks {tuple(m.shape)} and label maps {tuple(lab.shape)} must both be (N,H,W)")
        if len(cities) != m.shape[0]:
            raise ValueError(f"{len(cities)} city names for {m.shape[0]} images")
        if places is not None and len(places) != m.shape[0]:
            raise ValueError(f"{len(places)} places for {m.shape[0]} images")
        if m.dtype.is_complex or not m.dtype.is_floating_point:
            raise ValueError(f"masks must be floating point, got {m.dtype}")
        if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
            raise ValueError(f"label maps must be integer class indices, got {lab.dtype}")
        if m.shape[0] == 0:
            return
        lo, hi = torch.aminmax(m)
        if not (lo >= 0 and hi <= 1):
            raise ValueError(f"masks must lie in [0, 1], got [{float(lo)}, {float(hi)}]")
        bad_labels = ValueError(f"label maps must hold 0..{N_CLASSES - 1} or {UNLABELLED} (unlabelled)")
        if lab.dtype != torch.uint8:
            lo_lab, hi_lab = torch.aminmax(lab)
            if lo_lab < 0 or hi_lab > UNLABELLED:
                raise bad_labels
        self._without_places |= places is None
        units = list(zip(cities, [None] * len(cities) if places is None else [str(p) for p in places]))
        local = list(dict.fromkeys(units))
        position = {u: i for i, u in enumerate(local)}
        local_idx = torch.tensor([position[u] for u in units], dtype=torch.int32, device=m.device)
        # level = number of thresholds <= mask, summed comparisons made in the mask's own dtype as `mask >= t`
        # does (a Python float is cast to the mask dtype). Every label 0..255 gets a bin: unlabelled ones are
        # dropped afterwards (cheaper than selecting the labelled pixels) and bins 150..254 reveal bad labels.
        thr = torch.tensor(self._sorted, dtype=m.dtype, device=m.device)
        n_levels = len(self._sorted) + 1
        size = len(local) * 256 * n_levels
        hist = torch.zeros(size, dtype=torch.int64, device=m.device)
        lab = lab.to(device=m.device, dtype=torch.int32)
        per_block = max(1, _BLOCK_PIXELS // max(1, m.shape[1] * m.shape[2]))
        for s in range(0, m.shape[0], per_block):
            mb = m[s : s + per_block]
            key = (local_idx[s : s + per_block, None, None] * 256 + lab[s : s + per_block]) * n_levels
            for t in thr:
                key += mb >= t
            hist += torch.bincount(key.view(-1), minlength=size)
        hist = hist.cpu().numpy().reshape(len(local), 256, n_levels)
        if hist[:, N_CLASSES:UNLABELLED].any():
            raise bad_labels
        hist = hist[:, :N_CLASSES]
        gidx = self._register(local)
        np.add.at(self._images, [self._city_index[c] for c in cities], 1)
        self._total[gidx] += hist.sum(axis=2)
        # explained at sorted threshold j <=> level > j: reversed cumulative sum over levels.
        above = np.cumsum(hist[..., ::-1], axis=2)[..., ::-1][..., 1:]
        self._explained[gidx] += above[..., self._rank]

    def table(self, n_boot: int = 0, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
        """Rows per (threshold, city, object present in the city); thresholds as given, cities sorted.

        n_boot > 0 adds each ratio's percentile interval over the city's test places (ci_low, ci_high; one
        bootstrap per city, the same resamples for every object and threshold); else they are NaN.
        """
        if n_boot > 0 and self._without_places:
            raise ValueError("object-ratio intervals need each image's place: pass places= to update")
        per_city = {}
        for city in self.cities:
            units = np.flatnonzero(self._unit_city == self._city_index[city])
            total = self._total[units].sum(axis=0)
            present = np.nonzero(total)[0]
            explained = self._explained[units].sum(axis=0)[present]
            low = high = np.full((len(present), len(self.thresholds)), np.nan)
            if n_boot > 0 and len(present):
                num = self._explained[units][:, present].transpose(1, 2, 0).reshape(-1, len(units))
                den = np.repeat(self._total[units][:, present].T, len(self.thresholds), axis=0)
                low, high = (x.reshape(len(present), -1) for x in ratio_ci(num, den, n_boot, level, seed))
            per_city[city] = (present, total[present], explained, low, high)
        rows = []
        for ti, t in enumerate(self.thresholds):
            for city in sorted(self.cities):
                present, total, explained, low, high = per_city[city]
                mean = total / self._images[self._city_index[city]]
                rows.append(
                    pd.DataFrame(
                        {
                            "threshold": t,
                            "city": city,
                            "object": [ADE20K_CLASSES[p] for p in present],
                            "object_id": present,
                            "ratio": explained[:, ti] / total,
                            "explained_pixels": explained[:, ti],
                            "total_pixels": total,
                            "mean_pixels": mean,
                            "kept": mean > self.min_mean_pixels,
                            "ci_low": low[:, ti],
                            "ci_high": high[:, ti],
                        }
                    )
                )
        if not rows:
            return pd.DataFrame({c: [] for c in TABLE_COLUMNS})
        return pd.concat(rows, ignore_index=True)[TABLE_COLUMNS]


def object_ratios(
    masks: np.ndarray | torch.Tensor,
    label_maps: np.ndarray | torch.Tensor,
    cities: Sequence[str],
    threshold: float | Sequence[float],
    min_mean_pixels: float = 100,
    places: Sequence[str] | None = None,
    n_boot: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Object-ratio table of all images at once (see `RatioAccumulator.table` for the rows).

    Columns: threshold, city, object (ADE20K name), object_id, ratio = explained/total pixels,
    explained_pixels, total_pixels, mean_pixels = total_pixels / number of the city's images (all of them,
    not only those showing the object), kept = mean_pixels > min_mean_pixels, and the interval over test
    places ci_low, ci_high when n_boot > 0 (places None: every image its own place).
    """
    acc = RatioAccumulator(threshold, min_mean_pixels)
    if places is None and n_boot > 0:
        places = [str(i) for i in range(len(cities))]
    acc.update(masks, label_maps, cities, places)
    return acc.table(n_boot, seed)


def _gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, -> 1 = concentrated on one."""
    if x.sum() == 0:
        return 0.0
    s = np.sort(x)
    n = len(s)
    return float((2 * np.arange(1, n + 1) - n - 1) @ s / (n * s.sum()))


def ratio_summary(table: pd.DataFrame) -> pd.DataFrame:
    """How far each city's histogram of kept-object ratios is from uniform, per (threshold, city).

    The paper reads a uniform histogram of R over objects as "meaningless" (the network takes any object as
    discriminative) and a peaked one as interpretable (Sec. 3.4). We measure this with:
    - evenness: Shannon entropy of the ratios normalised to sum 1, divided by log(n_kept). 1 = uniform,
      -> 0 = one object carries everything. Normalising makes it blind to the overall level of the ratios
      (a looser threshold raises every ratio) and comparable across cities with different object counts.
      1 when every ratio is 0 (flat histogram); NaN below two kept objects.
    - selectivity = 1 - evenness, the same read the other way.
    - gini of the ratios (0 = uniform): less sensitive to many near-zero objects than the entropy.
    - top_share: largest ratio over their sum, and top_object its name (ties by name).
    - lift_max: largest ratio over base_ratio, the explained fraction of all labelled pixels of the city
      (over every object, kept or not): a mask blind to objects gives each object about base_ratio.
    """
    rows = []
    for (t, city), g in table.groupby(["threshold", "city"], sort=False):
        base = g["explained_pixels"].sum() / g["total_pixels"].sum()
        kept = g[g["kept"]].sort_values(["ratio", "object"], ascending=[False, True])
        r = kept["ratio"].to_numpy(dtype=np.float64)
        n = len(r)
        if n < 2:
            evenness = np.nan
        elif r.sum() == 0:
            evenness = 1.0
        else:
            evenness = float(entropy(r) / np.log(n))
        rows.append(
            {
                "threshold": t,
                "city": city,
                "n_kept": n,
                "evenness": evenness,
                "selectivity": 1.0 - evenness,
                "gini": _gini(r) if n else np.nan,
                "top_object": kept["object"].iloc[0] if n else None,
                "top_share": float(r[0] / r.sum()) if n and r.sum() > 0 else np.nan,
                "base_ratio": float(base),
                "lift_max": float(r[0] / base) if n and base > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def planted_recovery(table: pd.DataFrame, planted: dict[str, list[str]]) -> pd.DataFrame:
    """Does the ratio ranking put the objects planted as a city's cue on top? Per (threshold, planted city).

    Kept objects are ranked by ratio (descending, ties broken by name); with k = number planted,
    precision_at_k = |top k & planted| / k, separated = every planted object outranks every unplanted kept
    one (so all planted must be kept), planted_ranks = 1-based rank of each planted object in the given order
    (None where it is absent or not kept). A planted city without rows gets precision 0, not separated.
    """
    planted = {city: list(dict.fromkeys(names)) for city, names in planted.items()}
    for names in planted.values():
        for name in names:
            class_index(name)
    rows = []
    thresholds = list(dict.fromkeys(table["threshold"])) if len(table) else []
    for t in thresholds:
        at_t = table[table["threshold"] == t]
        for city, names in planted.items():
            kept = at_t[(at_t["city"] == city) & at_t["kept"]]
            ranking = kept.sort_values(["ratio", "object"], ascending=[False, True])["object"].tolist()
            rank = {name: i + 1 for i, name in enumerate(ranking)}
            k = len(names)
            hits = len(set(ranking[:k]) & set(names))
            ranks = [rank.get(name) for name in names]
            rows.append(
                {
                    "threshold": t,
                    "city": city,
                    "k": k,
                    "n_kept": len(ranking),
                    "precision_at_k": hits / k if k else np.nan,
                    "separated": k > 0 and all(r is not None and r <= k for r in ranks),
                    "planted_ranks": tuple(ranks),
                }
            )
    return pd.DataFrame(rows)
