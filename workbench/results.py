"""Shared behaviour of result objects: JSON and pandas.

Every result the library returns is a dataclass that inherits :class:`Result`,
so it serialises with ``to_dict()`` / ``to_json()`` and tabulates with
``to_pandas()``. Tensors and numpy arrays become nested lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch


def jsonable(value: Any) -> Any:
    """Convert tensors, arrays, dataclasses and NaN into JSON-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        return jsonable(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class Result:
    """Mixin for result dataclasses.

    Subclasses override :meth:`to_pandas` when a flat table of their own reads
    better than the default (one row per field).

    Example:
        >>> @dataclasses.dataclass
        ... class R(Result):
        ...     x: float
        >>> R(1.0).to_json()
        '{"x": 1.0}'
    """

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)

    def to_json(self, path: str | Path | None = None, **kwargs) -> str:
        text = json.dumps(self.to_dict(), **kwargs)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([self.to_dict()])
