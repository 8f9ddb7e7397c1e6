"""The ``slurm`` recipe section: what the batch job asks for and how steps are started."""

from __future__ import annotations

import re

from attrs import field, frozen, validators as v

# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_WORD = v.optional(v.matches_re(r"^[A-Za-z0-9_.@+%:,\[\]-]+$"))


def time_limit_seconds(text: str) -> int:
    """Seconds of a Slurm time limit (``90``, ``1:30:00``, ``2-00:00:00``, ...)."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a Slurm time limit: {text!r} (use e.g. 90, 01:30:00, 2-00:00:00)")
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b) if b else None, int(c) if c else None
    if days is not None:  # D-H[:M[:S]]
        return int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:  # H:M:S
        return a * 3600 + b * 60 + c
    if b is not None:  # M:S
        return a * 60 + b
    return a * 60  # M


def _time_limit(inst, attribute, value):
    if value is not None:
        try:
            time_limit_seconds(value)
        except ValueError as exc:
            raise ValueError(f"'{attribute.name}' {exc}") from None


def _options_list(inst, attribute, value):
    for item in value:
        if not item.startswith("-") or "\n" in item:
            raise ValueError(f"'{attribute.name}' items must be options like '--qos=high': {item!r}")


def _names(inst, attribute, value):
    for item in value:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", item):
            raise ValueError(f"'{attribute.name}' holds environment variable names: {item!r}")


@frozen(kw_only=True)
class SlurmOptions:
    """Recipe section ``slurm``.

    The job: ``nodes`` x ``gpus_per_node`` (whole nodes unless ``exclusive: false``) in
    ``partition``/``account`` for ``time_limit``, plus ``sbatch_extra`` lines. Each process: an
    ``srun --overlap`` step (``srun_extra`` appended), in ``container_image`` when one is named
    (pyxis), multi-task steps under ``--mpi=<mpi>``.
    """

    partition: str | None = field(default=None, validator=_WORD)
    account: str | None = field(default=None, validator=_WORD)
    time_limit: str | None = field(default=None, validator=_time_limit)
    nodes: int = field(default=1, validator=[v.instance_of(int), v.ge(1)])
    gpus_per_node: int | None = field(default=None, validator=v.optional(v.ge(0)))
    exclusive: bool = True
    job_name: str | None = field(default=None, validator=_WORD)  # default: bench-<recipe name>
    sbatch_extra: list[str] = field(factory=list, validator=_options_list)
    srun_extra: list[str] = field(factory=list, validator=_options_list)
    mpi: str = field(default="pmix", validator=v.matches_re(r"^[a-z0-9_]+$"))
    # pyxis: used for every process that names no image of its own
    container_image: str | None = None
    container_mounts: list[str] = field(factory=list)
    container_env: list[str] = field(factory=list, validator=_names)  # extra names to pass in
    container_name: str | None = field(default=None, validator=_WORD)
    # ports: each job gets its own window of [port_base, port_limit), picked by job id, so jobs
    # sharing a node never collide. Below 32768: clear of Linux's ephemeral ports (32768-60999),
    # and Dynamo reads DYN_SYSTEM_PORT as a signed 16-bit number.
    port_base: int = field(default=20000, validator=[v.ge(1024), v.le(64000)])
    port_limit: int = field(default=32000, validator=[v.ge(1040), v.le(65536)])
    port_window: int = field(default=200, validator=[v.ge(16), v.le(20000)])
    # following a submitted job
    follow: bool = True  # false: submit and return (like --detach)
    poll_interval_s: float = field(default=2.0, validator=v.gt(0))
    grace_s: float | None = field(default=None, validator=v.optional(v.ge(0)))  # default: stop_grace_s
    cancel_timeout_s: float = field(default=120.0, validator=v.gt(0))  # wait for a cancelled job
    term_before_end_s: int = field(default=120, validator=v.ge(0))  # TERM the driver before time limit

    def __attrs_post_init__(self):
        if self.port_limit - self.port_base < self.port_window:
            raise ValueError(f"'port_limit' ({self.port_limit}) - 'port_base' ({self.port_base}) must "
                             f"hold at least one 'port_window' ({self.port_window})")

    def port_range(self, job_id: str | None) -> tuple[int, int]:
        """``(first, end)`` of the job's port window (the first window without a job id)."""
        slots = (self.port_limit - self.port_base) // self.port_window
        slot = int(job_id) % slots if job_id and str(job_id).isdigit() else 0
        first = self.port_base + slot * self.port_window
        return first, first + self.port_window
