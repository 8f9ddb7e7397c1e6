"""Slurm's command-line tools, called with argument lists, and defensive parsers of their output.

Only stable, format-controlled outputs are parsed (``squeue -h -o``, ``sbatch --parsable``,
``scontrol show``'s ``Key=Value`` records). Other Slurm versions add keys, reorder them, put
spaces in values (``OS=Linux 6.1 ...``) or write GRES as ``gpu:4(IDX:0-3)``, ``gpu:a100:4``
or ``gpu(IDX:0,1)``: every parser here tolerates those and unknown keys.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Mapping, Sequence

from attrs import frozen

from benchstack.errors import SchedulerError

#: job states after which a job runs no more (``scontrol``/``squeue``/``sacct`` spellings)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED",
            "OUT_OF_MEMORY", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}


def run(argv: Sequence[str], timeout: float = 30.0, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm command; a missing tool or (with ``check``) a failure is a SchedulerError."""
    if shutil.which(argv[0]) is None:
        raise SchedulerError(f"{argv[0]!r} not found: is this a Slurm login or compute node? "
                             "(Slurm's client commands must be on PATH)")
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{' '.join(argv)} did not answer within {timeout:g} s "
                             "(is slurmctld up?)") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        raise SchedulerError(f"{' '.join(argv)} failed (exit {proc.returncode}): {err}")
    return proc


# --------------------------------------------------------------------------- scontrol records

_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_/:.]*)=")


def parse_record(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol show`` record (values may hold spaces)."""
    out: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for m, nxt in zip(matches, matches[1:] + [None], strict=True):
        end = nxt.start() if nxt else len(text)
        out.setdefault(m.group(1), text[m.end():end].strip())
    return out


def parse_records(text: str, first_key: str) -> list[dict[str, str]]:
    """Split ``scontrol show node A,B`` output (records start at ``first_key=``) and parse each."""
    chunks = re.split(rf"(?m)^(?={re.escape(first_key)}=)", text)
    return [parse_record(c) for c in chunks if c.strip().startswith(f"{first_key}=")]


def gres_gpu_count(gres: str) -> int:
    """GPUs in a GRES string: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:4(IDX:0-3)``, ``gpu(IDX:0,2)``."""
    total = 0
    for item in _split_gres(gres):
        if not re.match(r"^gpu(?:[:(]|$)", item):
            continue
        idx = re.search(r"IDX:([^)]*)\)", item)
        if idx:
            total += len(expand_ranges(idx.group(1)))
            continue
        head = item.split("(", 1)[0]
        parts = head.split(":")
        count = parts[-1] if len(parts) > 1 else "1"
        total += _count(count)
    return total


def _split_gres(gres: str) -> list[str]:
    # commas separate items, except inside parentheses: gpu:2(IDX:0,2),nic:1
    items, depth, cur = [], 0, ""
    for ch in gres:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip() and i.strip() not in ("(null)", "N/A")]


def _count(text: str) -> int:
    m = re.match(r"^(\d+)([kKmMgG]?)$", text)
    if not m:
        return 0
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(m.group(1)) * mult


def expand_ranges(text: str) -> list[int]:
    """``0-2,5`` -> [0, 1, 2, 5] (Slurm index lists)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def job_gpus_per_node(job_detail: str) -> dict[str, int]:
    """GPUs the job holds on each node, from ``scontrol show job -d`` detail lines.

    Lines look like ``Nodes=node[1-2] CPU_IDs=0-7 Mem=0 GRES=gpu:4(IDX:0-3)``.
    """
    out: dict[str, int] = {}
    for line in job_detail.splitlines():
        line = line.strip()
        if not line.startswith("Nodes="):
            continue
        rec = parse_record(line)
        gpus = gres_gpu_count(rec.get("GRES", ""))
        for name in expand_hostlist(rec.get("Nodes", "")):
            out[name] = gpus
    return out


def expand_hostlist(expr: str) -> list[str]:
    """Expand a simple Slurm hostlist (``node[1-3,5],gpu7``) without calling Slurm."""
    out: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?(?:,|$)", expr.strip()):
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            out.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                out.append(f"{prefix}{i:0{width}d}")
    return [h for h in out if h]


# --------------------------------------------------------------------------- job status


@frozen(kw_only=True)
class JobStatus:
    """A job's state as far as the tools tell: ``state`` is '' when no tool knows the job."""

    job_id: str
    state: str = ""
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    nodes: str = ""
    source: str = ""  # which tool answered: squeue, scontrol, sacct

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def known(self) -> bool:
        return bool(self.state)


def normalise_state(text: str) -> str:
    """``CANCELLED by 0`` / ``CANCELLED+`` / ``cancelled`` -> ``CANCELLED``."""
    word = text.strip().split(" ", 1)[0].rstrip("+").upper()
    return word


def parse_exit(text: str) -> tuple[int | None, int | None]:
    """``ExitCode=3:0`` -> (3, 0); anything else -> (None, None)."""
    m = re.match(r"^\s*(\d+)(?::(\d+))?", text or "")
    if not m:
        return None, None
    return int(m.group(1)), int(m.group(2)) if m.group(2) else 0


def parse_squeue_line(job_id: str, line: str) -> JobStatus | None:
    """One line of ``squeue -h -o '%T|%r|%N'``."""
    parts = line.strip().split("|")
    if not parts or not parts[0]:
        return None
    reason = parts[1].strip() if len(parts) > 1 else ""
    return JobStatus(job_id=job_id, state=normalise_state(parts[0]),
                     reason="" if reason in ("None", "(null)") else reason,
                     nodes=parts[2].strip() if len(parts) > 2 else "", source="squeue")


def status_from_scontrol(job_id: str, text: str) -> JobStatus | None:
    rec = parse_record(text)
    if "JobState" not in rec:
        return None
    code, sig = parse_exit(rec.get("ExitCode", ""))
    return JobStatus(job_id=job_id, state=normalise_state(rec["JobState"]),
                     reason=rec.get("Reason", "") if rec.get("Reason") != "None" else "",
                     exit_code=code, signal=sig, nodes=rec.get("NodeList", ""), source="scontrol")


def status_from_sacct(job_id: str, text: str) -> JobStatus | None:
    """``sacct -X -n -P -j ID -o State,ExitCode,NodeList,Reason`` (first line)."""
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            code, sig = parse_exit(parts[1])
            return JobStatus(job_id=job_id, state=normalise_state(parts[0]), exit_code=code,
                             signal=sig, nodes=parts[2] if len(parts) > 2 else "",
                             reason=parts[3] if len(parts) > 3 and parts[3] != "None" else "",
                             source="sacct")
    return None


def accounting_enabled() -> bool:
    """True when ``sacct`` can answer (the cluster stores accounting in slurmdbd)."""
    proc = run(["scontrol", "show", "config"], check=False)
    rec = parse_record(proc.stdout.replace("\n", " ")) if proc.returncode == 0 else {}
    kind = rec.get("AccountingStorageType", "")
    return bool(kind) and not kind.endswith("/none")


def job_status(job_id: str, use_sacct: bool | None = None) -> JobStatus:
    """The job's state from squeue, then scontrol (terminal states, exit code), then sacct."""
    proc = run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r|%N"], check=False)
    st = None
    if proc.returncode == 0:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        st = parse_squeue_line(job_id, lines[0]) if lines else None
    if st is not None and not st.finished:
        return st
    proc = run(["scontrol", "show", "job", job_id], check=False)
    if proc.returncode == 0:
        sc = status_from_scontrol(job_id, proc.stdout)
        if sc is not None:
            return sc
    if use_sacct is None:
        use_sacct = accounting_enabled()
    if use_sacct:
        proc = run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode,NodeList,Reason"],
                   check=False)
        if proc.returncode == 0:
            sa = status_from_sacct(job_id, proc.stdout)
            if sa is not None:
                return sa
    return st or JobStatus(job_id=job_id)


# --------------------------------------------------------------------------- steps


def list_steps(job_id: str) -> list[tuple[str, str]] | None:
    """``[(step id, step name)]`` of a job's running steps; None if squeue does not know the job."""
    proc = run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i|%j"], check=False)
    if proc.returncode != 0:
        return None
    steps = []
    for line in proc.stdout.splitlines():
        sid, _, name = line.strip().partition("|")
        if sid:
            steps.append((sid.strip(), name.strip()))
    return steps


def hostnames(nodelist: str) -> list[str]:
    """``scontrol show hostnames`` of a node list, in allocation order."""
    out = run(["scontrol", "show", "hostnames", nodelist]).stdout
    return [h.strip() for h in out.splitlines() if h.strip()]
