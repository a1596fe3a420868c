"""Reading a compiled program's HLO text: which collectives run inside its loops, and how many
bytes each kind of collective moves per step."""

from __future__ import annotations

import math
import re

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_CALLED = re.compile(r"(?:calls|body|condition|to_apply)=%?([\w.\-]+)")
_COLLECTIVE = re.compile(r"= \w+\[([\d,]*)\]\S* (all-gather|reduce-scatter|all-reduce)(?:-start)?\(")
# "= (bf16[8,768]{...}, bf16[64,768]{...}) all-gather-start(" or "= f32[16]{0} all-reduce("
_ANY_COLLECTIVE = re.compile(
    r"= (\(.*?\)|\w+\[[\d,]*\]\S*) (all-to-all|all-gather|reduce-scatter|all-reduce|"
    r"collective-permute)(-start)?\(")
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_WHILE = re.compile(r"while\(.*body=%?([\w.\-]+)")
_TRIP = re.compile(r'known_trip_count"?\s*[:=]\s*\{\s*"?n"?\s*[:=]\s*"?(\d+)')
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
          "f32": 4, "s64": 8, "u64": 8, "f64": 8}
COLLECTIVE_KINDS = ("all-to-all", "all-gather", "reduce-scatter", "all-reduce", "collective-permute")


def _computations(hlo: str) -> dict[str, list[str]]:
    computations: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            name = header[1]
            computations[name] = []
        elif name is not None:
            computations[name].append(line)
    return computations


def loop_collectives(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """(opcode, result shape) of every all-gather / reduce-scatter / all-reduce in the body of a
    while loop of ``compiled.as_text()``, or in a computation such a body calls: the collectives
    that run once per iteration (a scan step, a chunk of the fused loss)."""
    computations = _computations(hlo)
    todo, seen = set(re.findall(r"body=%?([\w.\-]+)", hlo)), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        for line in computations[name]:
            todo |= set(_CALLED.findall(line))
    return [(op[2], tuple(int(n) for n in op[1].split(",") if n))
            for name in seen for line in computations[name] if (op := _COLLECTIVE.search(line))]


def _result_bytes(result_type: str, asynchronous: bool) -> int:
    sizes = [_BYTES[dtype] * math.prod(int(n) for n in dims.split(",") if n)
             for dtype, dims in _ARRAY.findall(result_type)]
    # An async start's tuple holds (operand, result[, scratch]): its largest array is what moves;
    # a synchronous tuple collective (a combined all-reduce) moves every array of its result.
    return max(sizes, default=0) if asynchronous else sum(sizes)


def _executions(hlo: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """(computations, {computation: executions per program run}): from the entry computation,
    every called computation (loop bodies, fusions, reductions) counted with the trip counts of
    the while loops around it (XLA's ``known_trip_count``; a loop without one counts once)."""
    computations = _computations(hlo)
    entry = next((m[1] for line in hlo.splitlines()
                  if line.startswith("ENTRY") and (m := _HEADER.match(line))), None)
    times: dict[str, int] = {}

    def visit(name: str, count: int, depth: int = 0) -> None:
        if name not in computations or depth > 64:
            return
        times[name] = times.get(name, 0) + count
        for line in computations[name]:
            loop = _WHILE.search(line)
            trips = int(m[1]) if loop and (m := _TRIP.search(line)) else 1
            for callee in set(_CALLED.findall(line)):
                visit(callee, count * (trips if loop and callee == loop[1] else 1), depth + 1)

    if entry is not None:
        visit(entry, 1)
    return computations, times


def collective_bytes(hlo: str) -> dict[str, int]:
    """Bytes per device each kind of collective (``COLLECTIVE_KINDS``) produces in one run of a
    compiled program (``compiled.as_text()``): the sum of the collectives' result sizes, each
    times its computation's executions (``_executions``: loop trip counts applied)."""
    computations, times = _executions(hlo)
    totals = dict.fromkeys(COLLECTIVE_KINDS, 0)
    for name, count in times.items():
        for line in computations[name]:
            op = _ANY_COLLECTIVE.search(line)
            if op:
                totals[op[2]] += count * _result_bytes(op[1], bool(op[3]))
    return totals


_DEFINITION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\]")
_DOT = re.compile(r"= \w+\[([\d,]*)\]\S* dot\(%?([\w.\-]+)[^)]*\).*lhs_contracting_dims=\{([\d,]*)\}")


def dot_flops(hlo: str) -> float:
    """FLOPs per device of every ``dot`` in a compiled program (2 x output elements x contracted
    size), times its computation's executions (``_executions``): unlike ``cost_analysis()``, which
    counts a while loop's body once, a scan over layers or blocks counts every iteration. Dots
    that XLA turned into convolutions or library calls are not counted."""
    computations, times = _executions(hlo)
    flops = 0.0
    for name, count in times.items():
        shapes = {m[1]: [int(n) for n in m[3].split(",") if n]
                  for line in computations[name] if (m := _DEFINITION.match(line))}
        for line in computations[name]:
            dot = _DOT.search(line)
            if not dot or dot[2] not in shapes:
                continue
            lhs = shapes[dot[2]]
            contracted = math.prod(lhs[int(i)] for i in dot[3].split(",") if i)
            flops += count * 2.0 * math.prod(int(n) for n in dot[1].split(",") if n) * contracted
    return flops
