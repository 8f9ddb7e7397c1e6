"""benchstack's ``mlperf`` load generator: MLCommons LoadGen driving benchstack's streaming client."""

__version__ = "0.1.0"
