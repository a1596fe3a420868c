"""report.md's lines on the whole fit rather than one law: the law to read (fit.json's
``law_to_read``) and the saved forecasts that runs trained since have scored (``forecasts_scored``,
from the study's ledger WORKDIR/forecasts.jsonl: ``neoscale.runner.forecasts``)."""

from __future__ import annotations

from neoscale.report.format import fmt_interval


def law_to_read_lines(fit: dict) -> list[str]:
    """'**Law to read**: key, form: why.' (nothing for a fit without one)."""
    to_read = fit.get("law_to_read") or {}
    if not to_read.get("key"):
        return []
    verified = "" if to_read.get("verified") else " Its forecasts are not verified by a backtest here."
    return [f"**Law to read: {to_read['key']}, form {to_read['form']}** ({to_read['why']}).{verified}",
            ""]


def _target(target: dict) -> str:
    if target["kind"] == "size":
        return f"size {target['size']} (N = {target['N']:.3g}, D = {target['D']:.3g}, C = {target['C']:.3g})"
    return f"C = {target['C']:.3g} ({target['factor']:.0f}× the largest compute then)"


def scored_lines(fit: dict) -> list[str]:
    """'### Forecasts scored': each saved forecast a run trained since covers, beside the commit
    and time it was made at; the ones the report told its reader to use first."""
    scored = fit.get("forecasts_scored")
    if scored is None:
        return []
    lines = ["### Forecasts scored", ""]
    if not scored:
        return lines + ["No saved forecast (WORKDIR/forecasts.jsonl) covers a run trained since it "
                        "was made.", ""]
    read = [s for s in scored if s["read"]]
    inside = [s for s in read if s["inside"]]
    lines += [f"{len(scored)} saved forecasts cover runs trained after them; of the {len(read)} made "
              f"with the form the report then told its reader to use, {len(inside)} hold the measured "
              "loss inside their 95% prediction interval.", "",
              "| made (UTC) | commit | law, form | target | forecast [95% PI] | measured | signed error "
              "| inside |",
              "|---|---|---|---|---|---|---|---|"]
    for s in sorted(scored, key=lambda s: (not s["read"], s["time_utc"])):
        mark = "n/a" if s["inside"] is None else ("yes" if s["inside"] else "**no**")
        form = f"{s['law']}, {s['form']}" + (" (read)" if s["read"] else "")
        lines.append(f"| {s['time_utc']} | {s['commit'][:10]} | {form} | {_target(s['target'])} | "
                     f"{s['loss']:.4g} {fmt_interval(s['interval'])} | {s['actual']:.4g} "
                     f"({', '.join(s['scored_on'])}) | {100 * s['signed_error']:+.2f}% | {mark} |")
    return lines + [""]
