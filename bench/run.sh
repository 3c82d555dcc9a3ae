#!/usr/bin/env bash
# Runs Kiln and its peers side by side on this machine and prints a report
# (also written to bench/results/latest.md). Peers come from Debian:
# beanstalkd, redis-server, PostgreSQL 15 (scripts/install-deps --bench).
#   BENCH_SECONDS=10 (per run)   BENCH_FILL=1000000 (messages for the memory/restart run)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BUILD:-build}
SECS=${BENCH_SECONDS:-10}
FILL=${BENCH_FILL:-1000000}
WORK=$(mktemp -d /tmp/kiln-bench-XXXXXX)
RESULTS=$WORK/results.jsonl
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n "${PG_BIN:-}" ]] && $AS_PG "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; say "port $1 did not open"; exit 1; }
bench() { # label, then kiln-bench args
  local label=$1; shift
  say "  $label: $*"
  "$BIN/kiln-bench" --seconds "$SECS" "$@" | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
}

KILN_PORT=18090 BS_PORT=18091 REDIS_PORT=18092 PG_PORT=18093

start_kiln() { # extra args...
  mkdir -p "$WORK/kiln"
  (cd "$WORK/kiln" && exec "$ROOT/$BIN/kiln" serve --listen 127.0.0.1:$KILN_PORT --data "$WORK/kiln/data" \
     --no-access-log --log-level "${KILN_LOG_LEVEL:-warn}" "$@" >> "$WORK/kiln/log" 2>&1) &
  KILN_PID=$!
  PIDS+=($KILN_PID)
  wait_port $KILN_PORT
  PROJECT=$(sed -n 's/.*"project_id": "\(.*\)".*/\1/p' "$WORK/kiln/iron.json")
  TOKEN=$(sed -n 's/.*"token": "\(.*\)".*/\1/p' "$WORK/kiln/iron.json")
}
stop_kiln() { kill "$KILN_PID"; wait "$KILN_PID" 2>/dev/null || true; }
kiln_args() { echo --target kiln --port $KILN_PORT --project "$PROJECT" --token "$TOKEN"; }

start_beanstalkd() { # fsync period in ms (0: every write)
  rm -rf "$WORK/bs"; mkdir -p "$WORK/bs"
  beanstalkd -l 127.0.0.1 -p $BS_PORT -b "$WORK/bs" -f "$1" & BS_PID=$!; PIDS+=($BS_PID)
  wait_port $BS_PORT
}
start_redis() { # appendfsync policy
  rm -rf "$WORK/redis"; mkdir -p "$WORK/redis"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync "$1" --daemonize no --loglevel warning > "$WORK/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=($REDIS_PID)
  wait_port $REDIS_PORT
}
start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  AS_PG=""
  mkdir -p "$WORK/pg"
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$WORK" "$WORK/pg"; AS_PG="runuser -u postgres --"; fi
  $AS_PG "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U bench >/dev/null
  $AS_PG "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on" start >/dev/null
  PG_CONN="host=127.0.0.1 port=$PG_PORT user=bench dbname=postgres"
  psql "$PG_CONN" -q -c "CREATE TABLE bench_queue (id bigserial PRIMARY KEY, body text NOT NULL,
      reserved_until timestamptz NOT NULL DEFAULT '-infinity')" >/dev/null
}

say "durable: every acknowledged post is fsync'd"
start_kiln
start_beanstalkd 0
start_redis always
start_postgres
for c in 1 8; do
  bench kiln-durable $(kiln_args) --queue cycle$c --clients $c
  bench beanstalkd-f0 --target beanstalkd --port $BS_PORT --clients $c
  bench redis-always --target redis --port $REDIS_PORT --queue cycle$c --clients $c
  bench postgres-skip-locked --target postgres --conninfo "$PG_CONN" --clients $c
done
for c in 1 8; do bench kiln-batch $(kiln_args) --queue batch$c --mode batch-cycle --clients $c; done
bench kiln-batch-post $(kiln_args) --queue batchpost --mode batch-post --clients 8
stop_kiln; kill $BS_PID $REDIS_PID; wait $BS_PID $REDIS_PID 2>/dev/null || true
rm -rf "$WORK/kiln"

say "interval: fsync every 50 ms / every second"
start_kiln --fsync interval:50ms
start_beanstalkd 50
start_redis everysec
for c in 1 8; do
  bench kiln-interval50 $(kiln_args) --queue icycle$c --clients $c
  bench beanstalkd-f50 --target beanstalkd --port $BS_PORT --clients $c
  bench redis-everysec --target redis --port $REDIS_PORT --queue icycle$c --clients $c
done
stop_kiln; kill $BS_PID $REDIS_PID; wait $BS_PID $REDIS_PID 2>/dev/null || true
rm -rf "$WORK/kiln"

say "push: deliveries to a local sink (inside kiln-bench), and the sink's ceiling by wrk"
SINK_PORT=18094
push_run() { # label, then kiln-bench args; a fresh server for each run
  rm -rf "$WORK/kiln"; start_kiln
  bench "$1" $(kiln_args) --mode push --sink-port $SINK_PORT "${@:2}"
  stop_kiln
}
sink_ceiling() { # label: the sink's own ceiling, by wrk
  "$BIN/kiln-bench" --mode sink --sink-port $SINK_PORT --seconds $((SECS + 5)) > /dev/null &
  SINK_PID=$!; PIDS+=($SINK_PID)
  wait_port $SINK_PORT
  WRK_RPS=$(wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$SINK_PORT/" | awk '/Requests\/sec/ {print $2}')
  printf '{"label":"%s","requests_per_sec":%s}\n' "$1" "${WRK_RPS:-0}" >> "$RESULTS"
  kill $SINK_PID 2>/dev/null || true
  wait $SINK_PID 2>/dev/null || true
}
# The ceiling before and after the push runs: the report uses their mean.
sink_ceiling sink-wrk-before
push_run push-max-1 --queue p1 --subscribers 1 --clients 2 --batch 100 --stop-after 100000 --seconds 60
push_run push-max-1-b10 --queue p1 --subscribers 1 --clients 2 --batch 10 --stop-after 100000 --seconds 60
push_run push-max-16 --queue p16 --subscribers 16 --clients 1 --batch 10 --stop-after 10000 --seconds 60
push_run push-paced-1 --queue p1 --subscribers 1 --clients 1 --batch 10 --rate 700
push_run push-paced-16 --queue p16 --subscribers 16 --clients 1 --batch 1 --rate 375
sink_ceiling sink-wrk-after
rm -rf "$WORK/kiln"

if [[ $(id -u) -eq 0 ]] && command -v runc >/dev/null; then
  say "tasks: POST -> complete for a busybox true task, beside bare runc"
  start_kiln --runner-slots 4
  node bench/tasks.mjs "http://127.0.0.1:$KILN_PORT" "$PROJECT" "$TOKEN" "$WORK" \
    "${BENCH_TASKS:-200}" "${BENCH_TASKS_N:-1000}" >> "$RESULTS"
  stop_kiln
  rm -rf "$WORK/kiln"
else
  say "tasks: skipped (needs root and runc)"
fi

say "memory and restart with $FILL queued messages"
start_kiln
rss() { awk '/VmRSS/ {print $2 * 1024}' /proc/$KILN_PID/status; }
RSS_EMPTY=$(rss)
"$BIN/kiln-bench" $(kiln_args) --queue fill --mode batch-post --clients 4 --seconds 600 --body-bytes 100 \
  --stop-after "$FILL" > "$WORK/fill.json"
RSS_FULL=$(rss)
stop_kiln
T0=$(date +%s%N)
KILN_LOG_LEVEL=info start_kiln
T1=$(date +%s%N)
RECOVER_LINE=$(grep -h recovered "$WORK/kiln/log" | tail -1 || true)
RECOVER_MS=$(echo "$RECOVER_LINE" | sed -n 's/.* in \([0-9]*\) ms.*/\1/p')
RSS_RESTARTED=$(rss)
stop_kiln
# An empty server after a restart, for the baseline.
rm -rf "$WORK/kiln"; start_kiln; stop_kiln; start_kiln; RSS_EMPTY_RESTARTED=$(rss); stop_kiln
printf '{"label":"fill","queued":%s,"rss_empty":%s,"rss_full":%s,"rss_restarted":%s,"rss_empty_restarted":%s,"restart_ms":%s,"recover_ms":%s}\n' \
  "$FILL" "$RSS_EMPTY" "$RSS_FULL" "$RSS_RESTARTED" "$RSS_EMPTY_RESTARTED" $(( (T1 - T0) / 1000000 )) "${RECOVER_MS:-null}" >> "$RESULTS"

mkdir -p bench/results
node bench/report.mjs "$RESULTS" | tee bench/results/latest.md
cp "$RESULTS" bench/results/latest.jsonl
