# A real etcd (one member) on 127.0.0.1 for the cluster integration tests
# (sourced after lib.bash and pebble.bash, not a test itself). Never the
# default ports 2379/2380: a distribution's own etcd service may hold them.
# The ports are the last two of the test's pebble.bash block, so parallel
# ctest runs never collide; the data directory lives in $WORK and survives
# etcd_stop, so a restart comes back with everything stored.
#
#   etcd_env        reserve the ports (pebble_env) and export, starting nothing:
#       ETCD_URL        http://127.0.0.1:PORT, the client URL (the JSON gateway)
#       ETCD_PEER_PORT  its peer port
#       ETCD_DATA_DIR   the member's data directory
#       ETCD_LOG        etcd's log (appended across restarts)
#       PEBBLE_SPARE_PORTS is cut to the two ports left over
#   etcd_start      start it (again after etcd_stop/etcd_kill: same ports, same data)
#                   and wait until GET /health says it is healthy
#   etcd_stop       SIGTERM and wait;  etcd_kill  SIGKILL;  etcd_running
#   etcd_pause / etcd_resume   SIGSTOP / SIGCONT
#   etcd_get KEY    the value stored at KEY (printed), status 1 when absent
#   etcd_keys PREFIX  every key under PREFIX, one a line
#   etcd_range PREFIX "key value" lines under PREFIX, both base64
#   etcd_requests   KV, Lease and Lock requests etcd handled so far (its /metrics
#                   gRPC counters: the JSON gateway calls go through them)

command -v etcd >/dev/null && command -v base64 >/dev/null || {
  echo "etcd.bash: etcd is not installed (scripts/deps.sh installs etcd-server)" >&2
  exit 1
}

ETCD_PID=
ETCD_WORK=$WORK/etcd

etcd_env() {
  [ -n "${ETCD_URL:-}" ] && return 0
  pebble_env || return 1
  local client peer spare spare2
  read -r spare spare2 client peer <<<"$PEBBLE_SPARE_PORTS"
  export PEBBLE_SPARE_PORTS="$spare $spare2"
  export ETCD_URL=http://127.0.0.1:$client ETCD_PEER_PORT=$peer
  export ETCD_DATA_DIR=$ETCD_WORK/data ETCD_LOG=$ETCD_WORK/etcd.log
  mkdir -p "$ETCD_WORK"
}

etcd_running() { [ -n "$ETCD_PID" ] && kill -0 "$ETCD_PID" 2>/dev/null; }

etcd_healthy() { curl -sf --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; }

etcd_start() {
  etcd_env || return 1
  etcd_running && return 0
  local peer_url=http://127.0.0.1:$ETCD_PEER_PORT
  # env -u: etcd takes ETCD_* variables as flags, and would refuse ours
  env -u ETCD_URL -u ETCD_PEER_PORT -u ETCD_DATA_DIR -u ETCD_LOG \
    etcd --name certmaint-it --data-dir "$ETCD_DATA_DIR" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
    --initial-cluster "certmaint-it=$peer_url" --initial-cluster-state new >>"$ETCD_LOG" 2>&1 &
  ETCD_PID=$!
  if ! wait_for 20 etcd_healthy; then
    echo "etcd.bash: etcd did not report healthy on $ETCD_URL within 20 s (pid $ETCD_PID)" >&2
    echo "--- last lines of $ETCD_LOG" >&2; tail -n 20 "$ETCD_LOG" >&2 || true
    etcd_stop
    return 1
  fi
}

etcd_stop() { pebble_stop_pid "$ETCD_PID" TERM; ETCD_PID=; }
etcd_kill() { pebble_stop_pid "$ETCD_PID" KILL; ETCD_PID=; }
etcd_pause() { kill -STOP "$ETCD_PID"; }
etcd_resume() { kill -CONT "$ETCD_PID"; }

etcd_b64() { printf '%s' "$1" | base64 -w0; }

etcd_get() {
  local out
  out=$(curl -sf --max-time 5 -d "{\"key\":\"$(etcd_b64 "$1")\"}" "$ETCD_URL/v3/kv/range") || return 1
  lua5.4 -e '
    local s = io.read("a")
    local v = s:match([["value"%s*:%s*"([^"]*)"]])
    if not v then os.exit(1) end
    io.write(v)' <<<"$out" | base64 -d
}

# etcd_keys PREFIX: the range [PREFIX, PREFIX with its last byte + 1), keys only
etcd_keys() {
  local end out
  local last code
  last=${1: -1}; code=$(printf '%d' "'$last")
  end=${1%?}$(printf "\\$(printf '%03o' $((code + 1)))")
  out=$(curl -sf --max-time 10 -d "{\"key\":\"$(etcd_b64 "$1")\",\"range_end\":\"$(etcd_b64 "$end")\",\"keys_only\":true}" \
    "$ETCD_URL/v3/kv/range") || return 1
  local k
  for k in $(grep -o '"key":"[^"]*"' <<<"$out" | sed 's/"key":"//; s/"$//'); do
    printf '%s' "$k" | base64 -d; echo
  done
}

# etcd_range PREFIX: "key value" lines (both base64, as etcd sends them) under PREFIX
etcd_range() {
  local last code end out
  last=${1: -1}; code=$(printf '%d' "'$last")
  end=${1%?}$(printf "\\$(printf '%03o' $((code + 1)))")
  out=$(curl -sf --max-time 10 -d "{\"key\":\"$(etcd_b64 "$1")\",\"range_end\":\"$(etcd_b64 "$end")\"}" \
    "$ETCD_URL/v3/kv/range") || return 1
  lua5.4 -e 'for kv in io.read("a"):gmatch("{[^{}]*}") do
      local k, v = kv:match([["key":"([^"]*)"]]), kv:match([["value":"([^"]*)"]])
      if k then print(k, v or "") end
    end' <<<"$out"
}

etcd_requests() {
  curl -sf --max-time 5 "$ETCD_URL/metrics" |
    awk '/^grpc_server_handled_total\{/ && /grpc_service="etcdserverpb\.(KV|Lease)"|grpc_service="v3lockpb\.Lock"/ { n += $NF }
         END { printf "%d\n", n }'
}

trap 'etcd_stop; pebble_cleanup; cleanup' EXIT
