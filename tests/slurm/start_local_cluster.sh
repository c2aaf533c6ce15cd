#!/bin/bash
# Start a single-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd from
# Debian's packages (installed when missing), all state, logs and pid files under $GAPFILL_SLURM_DIR.
# Idempotent: a cluster this harness already started is reused. Prints `export SLURM_CONF=...`.
#   eval "$(bash tests/slurm/start_local_cluster.sh)" && sinfo && bash tests/slurm/stop_local_cluster.sh
# The node advertises 8 CPUs, 64 GB and one (fake) GPU whatever the machine has, so the repository's
# sbatch scripts run unmodified. Needs root (apt, munged as user munge, slurmd).
set -euo pipefail
D=${GAPFILL_SLURM_DIR:-/tmp/gapfill-slurm}
CTLD_PORT=${GAPFILL_SLURM_PORT:-16817}
HOST=$(hostname -s)
say() { echo "start_local_cluster: $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$(id -u)" != 0 ]; then say "needs root (apt-get, munged, slurmd)"; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  pkgs=(slurmctld slurmd slurm-client munge)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; }
fi

export SLURM_CONF=$D/slurm.conf
if alive "$D/run/slurmctld.pid" && alive "$D/run/slurmd.pid" && scontrol ping >/dev/null 2>&1; then
  say "reusing the cluster in $D"
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
if [ -d "$D/run" ]; then bash "$(dirname "$0")/stop_local_cluster.sh" >&2 || true; fi
rm -rf "$D"
mkdir -p "$D"/{run,log,ctld,spool,dev}

# munge: reuse a working munged (on a real machine one may already run), else start one as user munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$D/run/munged.pid"          # ours to stop
  munge -n | unmunge >/dev/null || { say "munged does not answer"; exit 1; }
fi

# fake GPU: a character device with NVIDIA's major number; Gres=gpu:1 with a File= keeps the node usable
mknod "$D/dev/nvidia0" c 195 0
cat > "$D/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=$D/dev/nvidia0
EOF
cat > "$SLURM_CONF" <<EOF
# single-node test cluster written by tests/slurm/start_local_cluster.sh
ClusterName=gapfilltest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
DependencyParameters=kill_invalid_depend
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=65536 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$SLURM_CONF" -c -i
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
slurmd -f "$SLURM_CONF" -N "$HOST"
for _ in $(seq 150); do
  state=$(sinfo -h -N -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  say "node is '${state:-missing}', not idle; last log lines:"
  tail -n 5 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2 || true
  exit 1
fi
say "cluster up in $D (node $HOST idle)"
echo "export SLURM_CONF=$SLURM_CONF"
