"""A pure-Python stand-in for TensorRT-LLM's ``trtllm-serve`` (which needs GPUs).

Same command line (:mod:`.cli`), same start-up checks (:mod:`.checks`), the same OpenAI HTTP
API with deterministic, configurable timing (:mod:`.server`, :mod:`.engine`), the
disaggregated context/generation orchestrator (:mod:`.disagg`), and TensorRT-LLM's config
schema as data with validators (:mod:`.schema`), which benchstack's own tests use to check the
configs it generates. Run it as ``python -m benchstack_trtllm_serve.standin MODEL ...`` or
through :func:`main`.
"""

from .log import VERSION


def main(argv=None) -> int:
    """Console entry point; see :func:`benchstack_trtllm_serve.standin.cli.main`."""
    from .cli import main as _main

    return _main(argv)


__all__ = ["VERSION", "main"]
