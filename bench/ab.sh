#!/bin/bash
# A/B one produce run: starts BROKER_BIN on a fresh data dir (127.0.0.1, random port),
# creates a 6-partition topic, runs CLIENT_BIN's `perf produce` once and prints its
# throughput, its CPU (user+sys) and the broker's CPU (utime+stime clock ticks from
# /proc/PID/stat). Alternate two builds several times; the machine is noisy.
#   usage: bash bench/ab.sh BROKER_BIN CLIENT_BIN [RECORDS [RECORD_SIZE]]
# Scenario 5 (fsync per batch): ACKS=all TOPIC_CONFIG=flush.messages=1 bash bench/ab.sh ...
set -u
B=$1; C=$2; N=${3:-4000000}; S=${4:-100}; ACKS=${ACKS:-1}; TOPIC_CONFIG=${TOPIC_CONFIG:-}
D=$(mktemp -d "${AB_DIR:-/tmp}/runnel-ab.XXXX"); PORT=$((20000 + RANDOM % 10000))
"$B" server --listeners PLAINTEXT://127.0.0.1:$PORT --log-dirs "$D" > "$D/log" 2>&1 & BP=$!
trap 'kill $BP 2>/dev/null; wait $BP 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 50); do "$C" --bootstrap-server 127.0.0.1:$PORT topics list >/dev/null 2>&1 && break; sleep 0.1; done
"$C" --bootstrap-server 127.0.0.1:$PORT topics create --topic ab --partitions 6 \
  ${TOPIC_CONFIG:+--config "$TOPIC_CONFIG"} >/dev/null
c0=$(awk '{print $14+$15}' /proc/$BP/stat)
/usr/bin/time -f "client cpu %U+%S s" "$C" --bootstrap-server 127.0.0.1:$PORT perf produce --topic ab \
  --num-records "$N" --record-size "$S" --producer-props acks=$ACKS linger.ms=5 batch.size=65536 2>&1 \
  | grep -o "^[0-9]* records sent, [0-9.]* records/sec\|client cpu .*" | tr '\n' ' '
c1=$(awk '{print $14+$15}' /proc/$BP/stat)
echo "broker cpu $((c1 - c0)) ticks"
