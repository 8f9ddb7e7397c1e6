"""Log lines shaped like trtllm-serve's, so log-tail readiness checks see familiar text.

TensorRT-LLM's logger prints ``[MM/DD/YYYY-HH:MM:SS] [TRT-LLM] [I] message``; uvicorn prints
``INFO:     Uvicorn running on http://H:P (Press CTRL+C to quit)``. Everything goes to stdout,
flushed per line (real uvicorn writes its own lines to stderr; one stream keeps order here).
"""

from __future__ import annotations

import os
import sys
import time

#: trtllm-serve ``--log_level`` choices (``tensorrt_llm.logger.severity_map`` keys), by verbosity.
SEVERITIES = ("internal_error", "error", "warning", "info", "verbose", "debug", "trace")
_LETTER = {"internal_error": "E", "error": "E", "warning": "W", "info": "I", "verbose": "V",
           "debug": "D", "trace": "T"}
#: Version string the stand-in reports (``/version``, start-up banner).
VERSION = os.environ.get("TRTLLM_STANDIN_VERSION", "1.2.0")


class Logger:
    """A tiny stand-in for ``tensorrt_llm.logger.logger``."""

    def __init__(self, level: str = "info"):
        self.level = level

    def set_level(self, level: str) -> None:
        self.level = level

    def enabled(self, severity: str) -> bool:
        return SEVERITIES.index(severity) <= SEVERITIES.index(self.level)

    def log(self, severity: str, message: str) -> None:
        if self.enabled(severity):
            stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
            print(f"[{stamp}] [TRT-LLM] [{_LETTER[severity]}] {message}", flush=True)

    def error(self, message: str) -> None:
        self.log("error", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def debug(self, message: str) -> None:
        self.log("debug", message)


logger = Logger()


def banner() -> None:
    """The line ``import tensorrt_llm`` prints first."""
    print(f"[TensorRT-LLM] TensorRT-LLM version: {VERSION}", flush=True)


def uvicorn(message: str, level: str = "INFO") -> None:
    """A uvicorn-style line: ``INFO:     message``."""
    print(f"{level + ':':<10}{message}", flush=True)


def fatal(exc_type: str, message: str) -> None:
    """Print the last lines of a Python traceback, as an uncaught exception in trtllm-serve would."""
    print("Traceback (most recent call last):\n  File \"trtllm-serve\", line 8, in <module>\n"
          "    sys.exit(main())", file=sys.stderr)
    print(f"{exc_type}: {message}", file=sys.stderr, flush=True)
