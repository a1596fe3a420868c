"""Reading a compiled program's HLO text: which collectives run inside its loops."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_CALLED = re.compile(r"(?:calls|body|condition|to_apply)=%?([\w.\-]+)")
_COLLECTIVE = re.compile(r"= \w+\[([\d,]*)\]\S* (all-gather|reduce-scatter|all-reduce)(?:-start)?\(")


def loop_collectives(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """(opcode, result shape) of every all-gather / reduce-scatter / all-reduce in the body of a
    while loop of ``compiled.as_text()``, or in a computation such a body calls: the collectives
    that run once per iteration (a scan step, a chunk of the fused loss)."""
    computations: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            name = header[1]
            computations[name] = []
        elif name is not None:
            computations[name].append(line)
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
