"""Parsing Slurm's output defensively: the shapes 22.05 prints, and those other versions print."""

from __future__ import annotations

import pytest

from benchstack_scheduler_slurm import slurmcli as sc

JOB_22_05 = """\
JobId=4 JobName=wrap
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901756 Nice=0 Account=(null) QOS=(null)
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   NodeList=node[1-2]
   BatchHost=node1
   NumNodes=2 NumCPUs=16 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=16,node=2,billing=16
   JOB_GRES=gpu:8
     Nodes=node[1-2] CPU_IDs=0-7 Mem=0 GRES=gpu:4(IDX:0-3)
   Command=/home/u/my job.sh
   WorkDir=/tmp/slx
"""

NODES = """\
NodeName=node1 Arch=x86_64 CoresPerSocket=1
   Gres=gpu:4
   NodeAddr=10.254.77.11 NodeHostName=node1 Version=22.05.8
   OS=Linux 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0
   State=ALLOCATED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A

NodeName=node2 Arch=x86_64 CoresPerSocket=1
   Gres=gpu:h100:8(S:0-1)
   NodeAddr=gpu-node-2.cluster NodeHostName=node2 Version=23.11.1
"""


def test_record_values_may_hold_spaces_and_equals():
    rec = sc.parse_record(JOB_22_05)
    assert rec["JobState"] == "RUNNING" and rec["ExitCode"] == "0:0"
    assert rec["Command"] == "/home/u/my job.sh"
    assert rec["TRES"] == "cpu=16,node=2,billing=16"
    assert rec["CPUs/Task"] == "1" and rec["NodeList"] == "node[1-2]"


def test_node_records():
    recs = sc.parse_records(NODES, "NodeName")
    assert [r["NodeName"] for r in recs] == ["node1", "node2"]
    assert recs[0]["NodeAddr"] == "10.254.77.11"
    assert recs[0]["OS"] == "Linux 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0"
    assert sc.gres_gpu_count(recs[1]["Gres"]) == 8


@pytest.mark.parametrize("gres, n", [
    ("gpu:4", 4), ("gpu:4(IDX:0-3)", 4), ("gpu:a100:2(IDX:0,2)", 2), ("gpu(IDX:1-2)", 2),
    ("gpu:h100:8(S:0-1)", 8), ("gpu:2,nic:1", 2), ("nic:1", 0), ("(null)", 0), ("", 0),
    ("gpu:a100:2(IDX:0-1),gpu:v100:1(IDX:2)", 3), ("gpu", 1),
])
def test_gres_gpu_count(gres, n):
    assert sc.gres_gpu_count(gres) == n


def test_job_gpus_per_node_from_detail_lines():
    detail = JOB_22_05 + "     Nodes=node3 CPU_IDs=0-3 Mem=0 GRES=gpu:2(IDX:2-3)\n"
    assert sc.job_gpus_per_node(detail) == {"node1": 4, "node2": 4, "node3": 2}
    assert sc.job_gpus_per_node("JobId=1 JobState=RUNNING\n") == {}


@pytest.mark.parametrize("expr, hosts", [
    ("node[1-3]", ["node1", "node2", "node3"]), ("gpu[08-10],login", ["gpu08", "gpu09", "gpu10", "login"]),
    ("a[1,3-4]", ["a1", "a3", "a4"]), ("single", ["single"]),
])
def test_expand_hostlist(expr, hosts):
    assert sc.expand_hostlist(expr) == hosts


def test_status_from_scontrol_terminal():
    text = JOB_22_05.replace("JobState=RUNNING", "JobState=FAILED").replace("ExitCode=0:0", "ExitCode=4:0")
    st = sc.status_from_scontrol("4", text)
    assert (st.state, st.exit_code, st.signal, st.finished) == ("FAILED", 4, 0, True)
    assert st.nodes == "node[1-2]" and st.reason == ""


@pytest.mark.parametrize("line, state, reason", [
    ("PENDING|Resources|", "PENDING", "Resources"), ("RUNNING|None|node[1-3]", "RUNNING", ""),
    ("completing|None|node1", "COMPLETING", ""), ("CANCELLED+|(null)|", "CANCELLED", ""),
])
def test_squeue_lines(line, state, reason):
    st = sc.parse_squeue_line("7", line)
    assert (st.state, st.reason) == (state, reason)


def test_sacct_spellings():
    st = sc.status_from_sacct("9", "CANCELLED by 0|0:15|node[1-2]|None\n")
    assert (st.state, st.exit_code, st.signal, st.reason) == ("CANCELLED", 0, 15, "")
    assert sc.status_from_sacct("9", "") is None


def test_unknown_status_is_not_finished():
    st = sc.JobStatus(job_id="1")
    assert not st.known and not st.finished


def test_missing_tool_is_a_scheduler_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sc.SchedulerError, match="'squeue' not found"):
        sc.run(["squeue"])
