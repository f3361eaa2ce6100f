#!/usr/bin/env bash
# Three `certmaint run` members sharing a real etcd (storage.etcd, 10 s lock
# leases), a dozen names, Pebble with 40 s certificates and real http-01
# validation that only member 1 can answer (from storage, for the others'
# orders): every name obtained once and renewed once per round, every member
# ends with the same serials, and a member killed with SIGKILL while holding
# a lock is taken over once its lease expires (the hand-over time and etcd's
# requests per renewal are printed).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/etcd.bash"
source "$(dirname "$0")/cluster.bash"

pebble_start --validity 40 --nosleep
etcd_start
cluster_env etcd
export CLUSTER_LOCK_TTL=10s
cluster_scenario
finish
