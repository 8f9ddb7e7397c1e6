"""`bench plan --scheduler slurm` from the command line: the sbatch script and every srun line,
with the probe plugin installed the way the real-cluster tests install it (no cluster needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def test_plan_prints_the_sbatch_script_and_every_srun_line(probe_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "probe", "backend": "slurmprobe", "scheduler": "slurm", "load": "slurmprobe",
        "model": {"name": "m", "path": "/nonexistent"},
        "slurmprobe": {"worker_nodes": [1, 2], "tasks_per_node": 4},
        "slurm": {"nodes": 3, "gpus_per_node": 4, "partition": "gpu", "time_limit": "30"},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(probe_dir)
    proc = subprocess.run([sys.executable, "-m", "benchstack.cli", "plan", str(recipe),
                           "--run-dir", str(tmp_path / "p")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "## job.sbatch" in out and "#SBATCH --nodes=3" in out and "#SBATCH --partition=gpu" in out
    assert f"exec {sys.executable} -m benchstack.cli run {recipe} --run-dir {tmp_path / 'p'}" in out
    assert "## bench-gpus.sh" in out
    srun = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("$ srun --overlap")]
    assert len(srun) == 2
    assert "--nodelist=node1 " in srun[0] and "--gpus" not in srun[0]
    assert "--nodelist=node2,node3 --nodes=2 --ntasks=8 --ntasks-per-node=4 --mpi=pmix" in srun[1]
    assert "--gpus-per-node=4" in srun[1] and "bench-gpus.sh 0 1 2 3 --" in srun[1]
    assert not (tmp_path / "p").exists()  # a plan writes nothing
