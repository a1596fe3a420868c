"""report.md's "Downstream tasks" section: each run's final task bits per byte and accuracy beside
chance (results.csv's ``task_<name>_*`` columns, ``neoscale.evaluation.scoring``)."""

from __future__ import annotations

from neoscale.accounting import format_count
from neoscale.scaling.task_chain import HOLDOUT_TOLERANCE, predict_largest, task_columns


def _cell(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def lines(frame) -> list[str]:
    """The section's markdown lines; [] when results.csv has no task columns."""
    found = task_columns(frame.columns) if len(frame) else {}
    final = frame[frame["final"]] if found else frame.iloc[:0]
    final = final[final[[bpb for bpb, _ in found.values()]].notna().any(axis=1)] if found else final
    if final.empty:
        return []
    final = final.sort_values("flops")
    names = sorted(found)
    out = ["## Downstream tasks", "",
           "Final evaluation of every run: bits per byte of the correct continuation (lower is "
           "better) / accuracy of the choice with the highest log-likelihood per character, zero-shot "
           "(`neoscale.evaluation`). Models this small sit at chance on accuracy (Pythia-70M scores "
           "0.000 on LAMBADA after 1B tokens): the signal is the bits per byte.", "",
           "| run | params | FLOPs | " + " | ".join(f"{name} bpb / acc" for name in names) + " |",
           "|---|---|---|" + "---|" * len(names)]
    for _, row in final.iterrows():
        cells = [f"{_cell(row[found[n][0]], 3)} / {_cell(row[found[n][1]], 3)}" for n in names]
        out.append(f"| {row['run']} | {format_count(row['params_total'])} | {row['flops']:.3g} | "
                   + " | ".join(cells) + " |")
    chance = [f"{name} {final[f'task_{name}_chance'].mean():.3f}" for name in names
              if f"task_{name}_chance" in final]
    if chance:
        out += ["", "Chance accuracy: " + ", ".join(chance) + "."]
    main = final[final["cooldown"].isna()] if "cooldown" in final else final
    if len(main) > 1:
        falling = [name for name in names
                   if main[found[name][0]].is_monotonic_decreasing and main[found[name][0]].notna().all()]
        out += ["", f"Bits per byte falls with compute across the {len(main)} main runs on "
                f"{len(falling)} of {len(names)} tasks" + (f" ({', '.join(falling)})." if falling else ".")]
    out += _holdout_lines(frame, found, names)
    return out + [""]


def _holdout_lines(frame, found: dict, names: list[str]) -> list[str]:
    """The largest main run's task bits per byte predicted from the smaller ones, per task."""
    rows = [(name, predict_largest(frame, found[name][0])) for name in names]
    rows = [(name, r) for name, r in rows if r is not None]
    if not rows:
        return []
    out = ["", f"The largest main run ({rows[0][1]['run']}) predicted from the {rows[0][1]['fitted_runs']} "
           "smaller main runs (pure power law bpb = A·C^−α on their final rows; 95% interval over "
           "resampled runs):"]
    for name, r in rows:
        interval = ("" if r["interval"] is None else
                    f" [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]")
        out.append(f"- {name}: predicted {r['predicted']:.3f}{interval}, measured {r['measured']:.3f} "
                   f"({100 * r['relative_error']:+.2f}%: "
                   f"{'within' if r['within_tolerance'] else 'outside'} {HOLDOUT_TOLERANCE:.0%})")
    return out


__all__ = ["lines"]
