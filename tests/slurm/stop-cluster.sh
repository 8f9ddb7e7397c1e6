#!/usr/bin/env bash
# Stop the cluster tests/slurm/start-cluster.sh started: cancel its jobs, end the daemons whose
# pid files it wrote, remove its namespaces, bridge, route and /etc/hosts lines. Idempotent.
#
#   tests/slurm/stop-cluster.sh [--keep-munge]                (as root)
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/benchstack-slurm}
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
SUBNET=${SLURM_SUBNET:-10.254.77}
MARK="# benchstack-slurm-cluster"
RUN_MARKS=/run/benchstack-slurm
KEEP_MUNGE=0
[ "${1:-}" = --keep-munge ] && KEEP_MUNGE=1
export SLURM_CONF=$CONF_DIR/slurm.conf

stop_pidfiles() {   # stop_pidfiles FILE...: TERM each live pid, wait up to 10 s, then KILL
  local f p pids=() left=()
  for f in "$@"; do
    [ -s "$f" ] || continue
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null && kill "$p" 2>/dev/null && pids+=("$p")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  for _ in $(seq 1 100); do
    left=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  kill -9 "${left[@]}" 2>/dev/null || true
}

if [ -s "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; then
  # cancel every job first, so that slurmstepd and the steps' processes end with their slurmd
  ids=$(squeue -h -o %A 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    for _ in $(seq 1 75); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop_pidfiles "$BASE"/slurmd-*.pid "$BASE/slurmctld.pid"
if [ "$KEEP_MUNGE" = 0 ] && [ -e "$RUN_MARKS/munge.started-by-us" ]; then
  stop_pidfiles /run/munge/munged.pid
  rm -f "$RUN_MARKS/munge.started-by-us"
fi

if [ -s "$RUN_MARKS/pmix-link.made-by-us" ]; then
  link=$(cat "$RUN_MARKS/pmix-link.made-by-us")
  [ -L "$link" ] && rm -f "$link"
  rm -f "$RUN_MARKS/pmix-link.made-by-us"
fi
for ns in $(ip netns list 2>/dev/null | awk '/^bsnode[0-9]+/{print $1}'); do ip netns del "$ns"; done
ip link del bsbr0 2>/dev/null || true
ip route del unreachable "${SUBNET%.*}.0.0/16" metric 4000 2>/dev/null || true
sed -i "/$MARK\$/d" /etc/hosts
rm -f "$BASE/settings"
# empty per-node cgroups left by proctrack/cgroup (rmdir removes only empty ones)
find /sys/fs/cgroup/*/ -mindepth 1 -maxdepth 1 -type d -name 'slurm_node*' 2>/dev/null |
  while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
echo "stopped"
