"""Errors a user can cause or meet. The CLI prints them as one clear message (traceback with --debug)."""

from __future__ import annotations


class BenchError(Exception):
    """Base of every error benchstack reports to the user without a traceback."""

    exit_code = 2


class RecipeError(BenchError):
    """The recipe (or an override) is wrong. ``lines`` are one error each, with their path."""

    def __init__(self, lines: list[str] | str, source: str | None = None):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + ("\n  ".join(self.lines) if len(self.lines) > 1 else self.lines[0]))


class PluginError(BenchError):
    """A plugin could not be found, loaded, or is ambiguous."""


class SchedulerError(BenchError):
    """The scheduler failed: allocation refused, job cancelled, node lost."""

    exit_code = 3


class ServerFailed(BenchError):
    """A server process exited while the run needed it."""

    exit_code = 3

    def __init__(self, name: str, code: int, log_tail: str, what: str = ""):
        self.name, self.code, self.log_tail = name, code, log_tail
        during = f" while waiting for {what}" if what else ""
        super().__init__(
            f"server {name!r} exited with code {code}{during}; last lines of its log:\n"
            + _indent(log_tail or "(empty log)")
        )


class ServerNotReady(BenchError):
    """A deployment did not become ready before its deadline."""

    exit_code = 3

    def __init__(self, what: str, timeout_s: float, missing: str, tails: dict[str, str]):
        self.what, self.missing, self.tails = what, missing, tails
        msg = f"{what} not ready after {timeout_s:g} s"
        if missing:
            msg += f" ({missing})"
        for name, t in tails.items():
            msg += f"\n--- last lines of {name}'s log:\n" + _indent(t or "(empty log)")
        super().__init__(msg)


class LoadError(BenchError):
    """A load generator failed to run a point."""

    exit_code = 3


class InvalidResults(BenchError):
    """The run finished but some points are invalid (exit non-zero unless --allow-invalid)."""

    exit_code = 4


class Interrupted(BenchError):
    """The run was stopped by Ctrl-C or SIGTERM; what was measured is kept."""

    exit_code = 130


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
