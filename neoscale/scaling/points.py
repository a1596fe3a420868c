"""Points of a results table that the laws share: the compute-loss Pareto frontier, the
family a single-family law is fitted on, and the model sizes."""

from __future__ import annotations

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


def frontier_points(compute: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, bool]:
    """(use (n,) bool, on_frontier): the points an L(C) law is fitted on: the compute-loss Pareto
    frontier if it has >= MIN_FRONTIER_POINTS points (on_frontier True), else all points."""
    frontier = pareto_frontier(compute, loss)
    on_frontier = bool(frontier.sum() >= MIN_FRONTIER_POINTS)
    return (frontier if on_frontier else np.ones_like(frontier)), on_frontier


def law_family(points: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Dense runs if any, else the expert count with most runs."""
    experts = points["num_experts"]
    chosen = 1 if (experts == 1).any() else experts.value_counts().idxmax()
    label = "dense" if chosen == 1 else f"{int(chosen)} experts"
    return points[experts == chosen].reset_index(drop=True), label


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
