"""Writing and reading the files a run or study keeps: atomic writes, JSON-safe values, and JSON
files read with one-line errors that name the file.

Paths are ``etils.epath`` paths (local or ``gs://``).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np
from etils import epath


class CorruptFileError(ValueError):
    """A file neoscale wrote cannot be read back (cut off by a kill, or edited by hand)."""


def write_atomic(path: str | epath.Path, text: str) -> None:
    """Writes a temporary sibling, then replaces ``path`` with it: readers never see half a file
    (on gs:// an object appears whole when its upload completes)."""
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"  # unique: slices share a workdir
    tmp.write_text(text)
    tmp.replace(path)


def jsonable(value: Any) -> Any:
    """JSON-safe, recursively: numpy arrays and scalars to Python, NaN and inf to None, tuples to
    lists, dict keys to str; anything else unknown to its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic) or (
            hasattr(value, "__array__") and not isinstance(value, str | bytes)):
        array = np.asarray(value)
        return jsonable(array.tolist() if array.ndim else array.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def to_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``jsonable(value)`` (strict JSON: no NaN or Infinity)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


def read_json(path: str | epath.Path, *, what: str = "", if_deleted: str = "") -> Any:
    """The JSON in ``path``; a file that is not valid JSON raises CorruptFileError in one line
    naming it, what it is (``what``) and what deleting it does (``if_deleted``)."""
    path = epath.Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError as error:
        described = f" ({what})" if what else ""
        advice = f"; {if_deleted}" if if_deleted else ""
        raise CorruptFileError(f"{path}{described} is not valid JSON ({error}): it was cut off by "
                               f"a kill or edited{advice}") from None
