"""benchstack: benchmark LLM serving stacks, from allocation to a trustworthy result.

The public plugin API is small: :data:`hookimpl` to mark implementations, the records in
:mod:`benchstack.records`, the :class:`~benchstack.launcher.Launcher` a backend starts processes
through, and the errors in :mod:`benchstack.errors`.
"""

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

from .hookspecs import PROJECT

try:
    __version__ = _version("benchstack")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

#: Marker for hook implementations: ``@benchstack.hookimpl def bench_launch_servers(...)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["hookimpl", "__version__"]
