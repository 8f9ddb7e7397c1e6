"""Submit the batch job and follow it: stream the driver's log, show state changes, map the exit.

Ctrl-C (or SIGTERM/SIGHUP) while following cancels the job in two stages: TERM to the driver
only (``scancel --batch --signal=TERM``), so it ends its steps in order and writes what it
measured; if the job is still there after the grace, ``scancel JOB``. A second Ctrl-C skips
to the hard cancel. Either way the follower waits until Slurm reports the job ended.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

from benchstack.errors import Interrupted, SchedulerError
from benchstack.records import RunSpec

from . import slurmcli
from .options import SlurmOptions
from .sbatch import DRIVER_LOG, SCRIPT, base_run_dir, job_argv, render_sbatch


def submit(spec: RunSpec, opts: SlurmOptions, argv: list[str] | None, detach: bool,
           err: TextIO | None = None, out: TextIO | None = None) -> int:
    """Write ``job.sbatch`` into the run directory, ``sbatch`` it, follow it unless detached."""
    err = err or sys.stderr
    out = out or sys.stdout
    run_dir = base_run_dir(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / SCRIPT
    script.write_text(render_sbatch(spec, opts, job_argv(argv, spec, run_dir), run_dir, Path.cwd()))
    answer = slurmcli.run(["sbatch", "--parsable", str(script)], timeout=60).stdout.strip()
    job_id = answer.split(";", 1)[0].strip()  # --parsable: "ID" or "ID;CLUSTER"
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch answered {answer!r}, not a job id")
    (run_dir / "job_id").write_text(job_id + "\n")
    if detach or not opts.follow:
        out.write(f"job_id: {job_id}\nrun_dir: {run_dir}\n")
        err.write(f"submitted batch job {job_id}; follow with: tail -f {run_dir / DRIVER_LOG}\n")
        return 0
    err.write(f"submitted batch job {job_id}; run directory {run_dir}\n")
    err.flush()
    grace = opts.grace_s if opts.grace_s is not None else spec.stop_grace_s
    return Follower(job_id, run_dir, opts, grace, err=err, out=out).follow()


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while following, like Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Follower:
    """Follows one job until it ends; ``follow()`` returns bench's exit code or raises."""

    def __init__(self, job_id: str, run_dir: Path, opts: SlurmOptions, grace_s: float,
                 err: TextIO, out: TextIO, status: Callable[..., slurmcli.JobStatus] | None = None):
        self.job_id, self.run_dir, self.opts, self.grace_s = job_id, run_dir, opts, grace_s
        self.err, self.out = err, out
        self.status = status or slurmcli.job_status
        self._pos = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # chars split by reads
        self._shown = ""
        self.unknown_grace_s = 30.0  # how long no tool may know the job before we stop asking

    def follow(self) -> int:
        interrupted = False
        with _term_as_interrupt():
            try:
                st = self._until_done(self.opts.poll_interval_s, deadline=None)
            except KeyboardInterrupt:
                interrupted = True
                st = self.cancel()
        self.pump()
        if not st.known:
            st = self.status(self.job_id, use_sacct=None)  # sacct only when accounting exists
        self.print_summaries()
        return self.exit_code(st, interrupted)

    # ------------------------------------------------------------------ watching
    def _until_done(self, interval: float, deadline: float | None) -> slurmcli.JobStatus:
        unknown_since: float | None = None
        while True:
            self.pump()
            st = self.status(self.job_id, use_sacct=False)
            self.show(st)
            if st.finished:
                return st
            if st.known:
                unknown_since = None
            elif unknown_since is None:
                unknown_since = time.monotonic()
            elif time.monotonic() - unknown_since >= self.unknown_grace_s:
                # purged already (MinJobAge) and no accounting to ask, or slurmctld is gone
                return st
            if deadline is not None and time.monotonic() >= deadline:
                return st
            time.sleep(interval)

    def pump(self) -> None:
        """Copy what the driver wrote to its log since the last call onto our stderr."""
        try:
            with open(self.run_dir / DRIVER_LOG, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
        except OSError:
            return
        if data:
            self._pos += len(data)
            self.err.write(self._decoder.decode(data))
            self.err.flush()

    def show(self, st: slurmcli.JobStatus) -> None:
        text = st.state or "unknown"
        if st.state == "PENDING" and st.reason:
            text += f" ({st.reason})"
        elif st.state == "RUNNING" and st.nodes:
            text += f" on {st.nodes}"
        elif st.finished and st.exit_code is not None:
            text += f" (exit {st.exit_code}" + (f", signal {st.signal}" if st.signal else "") + ")"
        if text != self._shown:
            self._shown = text
            self.err.write(f"[slurm] job {self.job_id}: {text}\n")
            self.err.flush()

    # ------------------------------------------------------------------ cancelling
    def cancel(self) -> slurmcli.JobStatus:
        """Stop the job: TERM to the driver first, ``scancel`` after the grace; wait until gone."""
        st = self.status(self.job_id, use_sacct=False)
        try:
            if st.state == "RUNNING":
                self.err.write(f"\n[slurm] cancelling job {self.job_id}: the driver ends its steps "
                               f"and keeps what it measured (Ctrl-C again to cancel at once)\n")
                slurmcli.run(["scancel", "--batch", "--signal=TERM", self.job_id], check=False)
                # the driver's own teardown: TERM, grace, KILL, check (see launcher.stop_all)
                st = self._until_done(0.5, time.monotonic() + self.grace_s + 45.0)
        except KeyboardInterrupt:
            pass
        if not st.finished:
            self.err.write(f"[slurm] scancel {self.job_id}\n")
            slurmcli.run(["scancel", self.job_id], check=False)
            with _ignore_interrupts():
                st = self._until_done(0.5, time.monotonic() + self.opts.cancel_timeout_s)
        return st

    # ------------------------------------------------------------------ the end
    def print_summaries(self) -> None:
        found = [self.run_dir / "summary.txt"] if (self.run_dir / "summary.txt").exists() else \
            sorted(self.run_dir.glob("*/summary.txt"))
        for path in found:
            self.out.write(path.read_text())
        self.out.flush()

    def exit_code(self, st: slurmcli.JobStatus, interrupted: bool) -> int:
        where = f"what was measured is in {self.run_dir}"
        if interrupted:
            self.err.write(f"[slurm] job {self.job_id} {st.state.lower() or 'gone'}; {where}\n")
            return Interrupted.exit_code
        if st.state in ("COMPLETED", "FAILED"):
            if st.exit_code == Interrupted.exit_code:
                # the driver got TERM without us: --signal=B:TERM before the time limit, or a
                # `scancel --signal=TERM` by someone
                limit = (f"its time limit ({self.opts.time_limit}) was near" if self.opts.time_limit
                         else "someone signalled it")
                raise SchedulerError(f"job {self.job_id}: the driver was stopped by SIGTERM before "
                                     f"the run ended ({limit}); {where}")
            if st.exit_code:
                return st.exit_code
            return 0 if st.state == "COMPLETED" else SchedulerError.exit_code
        if st.state == "CANCELLED":
            raise SchedulerError(f"job {self.job_id} was cancelled"
                                 + (f" ({st.reason})" if st.reason else "") + f"; {where}")
        if st.state == "TIMEOUT":
            raise SchedulerError(f"job {self.job_id} reached its time limit"
                                 f" ({self.opts.time_limit or 'the partition default'}); {where}")
        if st.state:
            raise SchedulerError(f"job {self.job_id} ended {st.state}"
                                 + (f" ({st.reason})" if st.reason else "") + f"; {where}")
        return self._exit_from_results()

    def _exit_from_results(self) -> int:
        """No tool knows the job any more: judge by the results it left."""
        results = sorted(self.run_dir.glob("**/results.json"))
        if not results:
            raise SchedulerError(f"job {self.job_id} is gone and left no results in {self.run_dir} "
                                 f"(see {self.run_dir / DRIVER_LOG})")
        worst = 0
        for path in results:
            data = json.loads(path.read_text())
            if data.get("errors"):
                worst = max(worst, SchedulerError.exit_code)
            elif not all(p.get("validity", {}).get("valid", True) for p in data.get("points", [])):
                worst = max(worst, 4)
        return worst


@contextlib.contextmanager
def _ignore_interrupts() -> Iterator[None]:
    """While waiting for a cancelled job to go: more Ctrl-C would only leave it behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
