"""Points of a results table that the laws share: the compute-loss Pareto frontier, the
family a single-family law is fitted on, and the model sizes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def pareto_frontier(compute: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(n,) bool: points with no other point at lower-or-equal compute and lower loss (of points
    tied in compute, only the lowest loss)."""
    order = np.lexsort((loss, compute))
    keep = np.zeros(compute.size, bool)
    best = np.inf
    for i in order:
        if loss[i] < best:
            keep[i], best = True, loss[i]
    return keep


MIN_FRONTIER_POINTS = 3  # a law on fewer frontier points than this is fitted on all points


def frontier_points(compute: np.ndarray, loss: np.ndarray, replicates: np.ndarray | None = None
                    ) -> tuple[np.ndarray, bool]:
    """(use (n,) bool, on_frontier): the points an L(C) law is fitted on: the compute-loss Pareto
    frontier if it has >= MIN_FRONTIER_POINTS points (on_frontier True), else all points.

    replicates: (n,) ids (``replicate_ids``): replicate seeds of one run stand or fall together,
    by their mean loss, so that the frontier never keeps only the luckiest seed."""
    if replicates is None:
        frontier = pareto_frontier(compute, loss)
        on_frontier = bool(frontier.sum() >= MIN_FRONTIER_POINTS)
        return (frontier if on_frontier else np.ones_like(frontier)), on_frontier
    keys, ids = np.unique(np.asarray(replicates), return_inverse=True)
    ids = ids.ravel()
    count = np.bincount(ids, minlength=keys.size)
    on_key = pareto_frontier(np.bincount(ids, weights=compute, minlength=keys.size) / count,
                             np.bincount(ids, weights=loss, minlength=keys.size) / count)
    frontier = on_key[ids]
    on_frontier = bool(on_key.sum() >= MIN_FRONTIER_POINTS)
    return (frontier if on_frontier else np.ones_like(frontier)), on_frontier


def replicate_ids(points: pd.DataFrame) -> np.ndarray | None:
    """(n,) one id per run up to its model seed (same variant, active parameters and tokens), or
    None when the table records no seeds (older studies: every point its own run)."""
    if "seed" not in points or not points["seed"].notna().any():
        return None
    keys = pd.DataFrame({"variant": variant_labels(points),
                         "n": np.round(np.log(points["params_active"].to_numpy(np.float64)), 6),
                         "d": np.round(np.log(points["tokens"].to_numpy(np.float64)), 6)})
    return keys.groupby(["variant", "n", "d"], sort=False).ngroup().to_numpy()


def budget_tags(points: pd.DataFrame) -> np.ndarray | None:
    """(n,) the budget tag of each point's main run ('tpp30' of 'w32d4h2-seed1_tpp30': runs named
    by the study runner, neoscale.runner.plan.run_name), or None when some run is not so named."""
    if "size" not in points or "parent" not in points:
        return None
    pattern = points["size"].astype(str).map(lambda size: f"{re.escape(size)}(?:-seed\\d+)?_")
    tags = []
    for parent, prefix in zip(points["parent"].astype(str), pattern, strict=True):
        match = re.match(prefix + "(.+)$", parent)
        if match is None:
            return None
        tags.append(match[1])
    return np.array(tags, dtype=object)


ROUTED_ONE = "1 routed expert"  # size grammar e1k1: a routed layer with one expert, not dense


def variant_labels(points: pd.DataFrame) -> np.ndarray:
    """(n,) each point's variant: "dense", ROUTED_ONE (a size named ...e1k1) or "{E} experts"."""
    experts = points["num_experts"].to_numpy()
    sizes = points["size"].astype(str) if "size" in points else pd.Series([""] * len(points))
    routed = sizes.str.contains(r"e1k1$", regex=True).to_numpy()
    return np.array(["dense" if e == 1 and not r else ROUTED_ONE if e == 1 else f"{int(e)} experts"
                     for e, r in zip(experts, routed, strict=True)], dtype=object)


def law_family(points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Dense runs if any, else the variant with most runs (variant_labels)."""
    if not len(points):
        return points.reset_index(drop=True), "dense"
    labels = variant_labels(points)
    chosen = "dense" if (labels == "dense").any() else pd.Series(labels).value_counts().idxmax()
    return points[labels == chosen].reset_index(drop=True), chosen


def size_key(points: pd.DataFrame) -> np.ndarray:
    return points["params_active"].to_numpy()


def largest_held_out(points: pd.DataFrame):
    """(train, held) split: held-out rows are those of the largest parameter count."""
    n = size_key(points)
    held = np.isclose(n, n.max(), rtol=1e-3)
    return points[~held], points[held]



def size_ids(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(distinct sizes ascending (S,), size index of each point (n,)); sizes within 1e-3 are one."""
    n = size_key(points)
    keys, ids = np.unique(np.round(np.log(n), 3), return_inverse=True)
    return np.array([n[ids == i].min() for i in range(keys.size)]), ids.ravel()


def local_slopes(compute, loss) -> np.ndarray:
    """(n-1,) −d ln L / d ln C between consecutive points of a ladder, ordered by compute (n,):
    positive where the loss falls; rising along the ladder is the steepening the ladder's law
    follows (``ladder_law``)."""
    compute, loss = np.asarray(compute, np.float64), np.asarray(loss, np.float64)
    if compute.shape != loss.shape or compute.ndim != 1 or compute.size < 2:
        raise ValueError(f"local_slopes needs two 1-d arrays of >= 2 points, got shapes "
                         f"{compute.shape} and {loss.shape}")
    if np.any(compute <= 0) or np.any(loss <= 0):
        raise ValueError("local_slopes needs positive compute and loss (it takes logarithms)")
    order = np.argsort(compute)
    log_c, log_l = np.log(compute[order]), np.log(loss[order])
    return -np.diff(log_l) / np.diff(log_c)
