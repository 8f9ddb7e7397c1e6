#!/usr/bin/env bash
# Start a real local Slurm cluster (Debian's slurm-wlm 22.05) on this machine, for benchstack's
# Slurm tests: N emulated nodes, each with its own network namespace, address and hostname,
# and G fake GPUs (gres/gpu backed by character devices, so Slurm sets CUDA_VISIBLE_DEVICES).
#
#   tests/slurm/start-cluster.sh [--restart] [N_NODES]        (as root)
#
# Idempotent: installs its Debian packages only when missing; when a cluster with the same
# settings already answers, it prints it and exits 0 (--restart rebuilds it anyway).
# Environment (defaults in brackets):
#   SLURM_NODES [3]             compute nodes node1..nodeN
#   SLURM_CPUS [8]              CPUs declared per node (may exceed the machine: config_overrides)
#   SLURM_GPUS [4]              fake GPUs per node; 0 = none
#   SLURM_NETNS [auto]          1 = a network + UTS namespace per node (own IP and ports),
#                               0 = every slurmd on 127.0.0.1 with its own port
#   SLURM_SUBNET [10.254.77]    /24 used only inside those namespaces (bridge side is .1)
#   SLURM_BASE [/tmp/benchstack-slurm]   state, spool, logs, pid files, fake devices
#   SLURM_CONF_DIR [/etc/slurm]          where slurm.conf goes (the CLI's default location)
#   SLURM_WAIT [120]            seconds to wait for every node to be idle
set -euo pipefail

RESTART=0
if [ "${1:-}" = --restart ]; then RESTART=1; shift; fi
N=${1:-${SLURM_NODES:-3}}
CPUS=${SLURM_CPUS:-8}
GPUS=${SLURM_GPUS:-4}
NETNS=${SLURM_NETNS:-auto}
SUBNET=${SLURM_SUBNET:-10.254.77}
BASE=${SLURM_BASE:-/tmp/benchstack-slurm}
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
WAIT=${SLURM_WAIT:-120}
MARK="# benchstack-slurm-cluster"
RUN_MARKS=/run/benchstack-slurm
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$(date +%s%N)
log() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '[start-cluster %3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
die() { echo "start-cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages, creates namespaces, starts daemons)"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N_NODES must be a positive number, got '$N'"
export SLURM_CONF=$CONF_DIR/slurm.conf

# ---------------------------------------------------------------- 0. already running?
WANT="nodes=$N cpus=$CPUS gpus=$GPUS netns=$NETNS subnet=$SUBNET base=$BASE"
if [ "$RESTART" = 0 ] && [ -s "$BASE/settings" ] && [ "$(cat "$BASE/settings")" = "$WANT" ] \
   && alive "$BASE/slurmctld.pid"; then
  up=$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -c -v -E 'down|drain|fail|unk' || true)
  if [ "$up" -eq "$N" ]; then
    sinfo -N -o '%N %T %c %G'
    log "cluster already running ($WANT)"
    exit 0
  fi
fi

# ---------------------------------------------------------------- 1. install (only what is missing)
# libpmix2: slurm's mpi_pmix plugin dlopens it; without it `srun --mpi=pmix` fails.
pkgs=(slurmctld slurmd slurm-client munge libpmix2 iproute2 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "slurm $(slurmd -V | awk '{print $2}') installed"

# ---------------------------------------------------------------- 2. stop what a previous start left
SLURM_BASE=$BASE SLURM_CONF_DIR=$CONF_DIR SLURM_SUBNET=$SUBNET \
  bash "$SCRIPT_DIR/stop-cluster.sh" --keep-munge >/dev/null 2>&1 || true
rm -rf "$BASE"
mkdir -p "$BASE"/{state,spool,log,dev} "$CONF_DIR" "$RUN_MARKS"

# Debian's mpi_pmix plugin dlopens <pmix dir>/libpmix.so, a link only libpmix-dev (with autoconf
# and friends) ships: make that one link ourselves (stop-cluster.sh removes it again).
PMIX_DIR=/usr/lib/x86_64-linux-gnu/pmix2/lib
if [ -e "$PMIX_DIR/libpmix.so.2" ] && [ ! -e "$PMIX_DIR/libpmix.so" ]; then
  ln -s libpmix.so.2 "$PMIX_DIR/libpmix.so"
  echo "$PMIX_DIR/libpmix.so" >"$RUN_MARKS/pmix-link.made-by-us"
fi

# ---------------------------------------------------------------- 3. munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged --force
  echo started >"$RUN_MARKS/munge.started-by-us"
fi
munge -n | unmunge >/dev/null
log "munge ok"

# ---------------------------------------------------------------- 4. network namespaces
if [ "$NETNS" = auto ]; then
  if ip netns add bsprobe$$ 2>/dev/null; then ip netns del bsprobe$$; NETNS=1; else NETNS=0; fi
fi
hosts_lines=""
if [ "$NETNS" = 1 ]; then
  CTL_ADDR=$SUBNET.1
  # safety net: should the bridge vanish, this range fails locally and never leaves the machine
  ip route replace unreachable "${SUBNET%.*}.0.0/16" metric 4000
  ip link add bsbr0 type bridge
  ip addr add "$CTL_ADDR/24" dev bsbr0
  ip link set bsbr0 up
  for i in $(seq 1 "$N"); do
    ns=bsnode$i
    ip netns add "$ns"
    ip link add "bsv$i" type veth peer name eth0 netns "$ns"
    ip link set "bsv$i" master bsbr0 up
    ip -n "$ns" addr add "$SUBNET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up   # no default route inside: only the /24 (and loopback) is reachable
    hosts_lines+="$SUBNET.$((10 + i)) node$i $MARK"$'\n'
  done
else
  CTL_ADDR=127.0.0.1
  for i in $(seq 1 "$N"); do hosts_lines+="127.0.0.1 node$i $MARK"$'\n'; done
fi
sed -i "/$MARK\$/d" /etc/hosts
printf '%s' "$hosts_lines" >>/etc/hosts
log "network ready (netns=$NETNS)"

# ---------------------------------------------------------------- 5. configuration
PROCTRACK=proctrack/linuxproc
if [ -d /sys/fs/cgroup/freezer ] && [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ]; then
  # cgroup v1 freezer present: every process of a step, daemonised ones too, ends with the step
  PROCTRACK=proctrack/cgroup
fi
{
  cat <<EOF
# written by benchstack's tests/slurm/start-cluster.sh
ClusterName=benchstack
SlurmctldHost=localhost($CTL_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
TmpFS=$BASE/tmp/%n
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=$PROCTRACK
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MailProg=/bin/true
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
EOF
  gres=""
  if [ "$GPUS" -gt 0 ]; then echo "GresTypes=gpu"; gres=" Gres=gpu:$GPUS"; fi
  for i in $(seq 1 "$N"); do
    if [ "$NETNS" = 1 ]; then addr="NodeAddr=$SUBNET.$((10 + i))"; else addr="NodeAddr=127.0.0.1 Port=$((17000 + i))"; fi
    echo "NodeName=node$i $addr CPUs=$CPUS RealMemory=16000$gres State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$CONF_DIR/slurm.conf"
if [ "$PROCTRACK" = proctrack/cgroup ]; then
  printf '%s\n' CgroupPlugin=cgroup/v1 CgroupMountpoint=/sys/fs/cgroup CgroupAutomount=no \
    ConstrainCores=no ConstrainRAMSpace=no ConstrainDevices=no >"$CONF_DIR/cgroup.conf"
else
  rm -f "$CONF_DIR/cgroup.conf"
fi
if [ "$GPUS" -gt 0 ]; then
  # Slurm drops File-less GPUs and rejects regular files: char devices with /dev/null's numbers.
  for g in $(seq 0 $((GPUS - 1))); do mknod -m 666 "$BASE/dev/nvidia$g" c 1 3; done
  printf 'AutoDetect=off\nNodeName=node[1-%s] Name=gpu File=%s/dev/nvidia[0-%s]\n' \
    "$N" "$BASE" $((GPUS - 1)) >"$CONF_DIR/gres.conf"
else
  rm -f "$CONF_DIR/gres.conf"
fi
log "config written to $SLURM_CONF (proctrack=$PROCTRACK)"

# ---------------------------------------------------------------- 6. daemons
slurmctld -f "$SLURM_CONF"
ctld_up() { [[ "$(scontrol ping 2>/dev/null)" == *"is UP"* ]]; }
for _ in $(seq 1 600); do ctld_up && break; sleep 0.1; done
ctld_up || { tail -n 30 "$BASE/log/slurmctld.log" >&2; die "slurmctld did not come up"; }
log "slurmctld up"
for i in $(seq 1 "$N"); do
  mkdir -p "$BASE/spool/node$i" "$BASE/tmp/node$i"
  if [ "$NETNS" = 1 ]; then
    # nsenter, not `ip netns exec`: that remounts /sys, which hides /sys/fs/cgroup (slurmd fatal)
    nsenter --net=/run/netns/bsnode$i unshare --uts \
      sh -c "hostname node$i && exec slurmd -f '$SLURM_CONF' -N node$i"
  else
    unshare --uts sh -c "hostname node$i && exec slurmd -f '$SLURM_CONF' -N node$i" 2>/dev/null ||
      slurmd -f "$SLURM_CONF" -N "node$i"
  fi
done
log "slurmd node1..node$N started"

# ---------------------------------------------------------------- 7. wait until every node is idle
deadline=$(($(date +%s) + WAIT))
while :; do
  idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | wc -l || true)
  [ "$idle" -eq "$N" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    sinfo -N >&2 || true
    tail -n 20 "$BASE"/log/*.log >&2
    die "nodes not idle after ${WAIT}s"
  fi
  sleep 0.2
done
echo "$WANT" >"$BASE/settings"
sinfo -N -o '%N %T %c %G'
log "cluster ready: $N nodes x $GPUS GPUs (netns=$NETNS, $PROCTRACK)"
