#!/usr/bin/env bash
# Three `certmaint run` members on one shared directory (the file backend,
# NFS-style lock files), a dozen names, Pebble with 40 s certificates and
# real http-01 validation that only member 1 can answer (from storage, for
# the others' orders): every name obtained once and renewed once per round,
# every member ends with the same serials, and a member killed with SIGKILL
# while holding a lock is taken over (the hand-over time is printed).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/cluster.bash"

pebble_start --validity 40 --nosleep
cluster_env file
cluster_scenario
finish
