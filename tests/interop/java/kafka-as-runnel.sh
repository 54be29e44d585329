#!/usr/bin/env bash
# Stand-in for the `runnel` binary that runs Apache Kafka (the jars in lib/) instead, so the
# interop tests can be checked against the reference broker:
#
#   tests/interop/java/setup.sh
#   RUNNEL_BIN=tests/interop/java/kafka-as-runnel.sh pytest tests/interop/test_java_*.py
#
# Accepts what tests/interop/conftest.py passes:
#   server --listeners PLAINTEXT://127.0.0.1:PORT --log-dirs DIR [--override k=v]...
# and starts a single-node KRaft broker+controller (controller on another free loopback
# port), formatting DIR on first start. Execs the JVM so SIGTERM/SIGKILL reach Kafka.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ "${1:-}" == "server" ]] || { echo "kafka-as-runnel: only 'server' is supported" >&2; exit 64; }
shift
listeners="" ; logdirs="" ; overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --listeners) listeners="$2"; shift 2 ;;
    --log-dirs) logdirs="$2"; shift 2 ;;
    --override) overrides+=("$2"); shift 2 ;;
    *) echo "kafka-as-runnel: unknown argument $1" >&2; exit 64 ;;
  esac
done
[[ -n "$listeners" && -n "$logdirs" ]] || { echo "kafka-as-runnel: need --listeners and --log-dirs" >&2; exit 64; }
mkdir -p "$logdirs"
props="$logdirs.kafka.properties"
if [[ ! -f "$props" ]]; then
  cport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  {
    echo "process.roles=broker,controller"
    echo "node.id=1"
    echo "controller.quorum.voters=1@127.0.0.1:$cport"
    echo "listeners=$listeners,CONTROLLER://127.0.0.1:$cport"
    echo "advertised.listeners=$listeners"
    echo "controller.listener.names=CONTROLLER"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "log.dirs=$logdirs"
    echo "offsets.topic.replication.factor=1"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    echo "share.coordinator.state.topic.replication.factor=1"
    echo "share.coordinator.state.topic.min.isr=1"
    echo "group.initial.rebalance.delay.ms=0"
    for o in "${overrides[@]}"; do echo "$o"; done
  } > "$props"
fi
CP="$HERE/lib/*"
# The JVM options: lean by default (the interop tests start many brokers on 2 cores);
# KAFKA_JVM_OPTS replaces them (bench/suite.py passes kafka-server-start.sh's own defaults).
if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then
  read -r -a JOPTS <<< "$KAFKA_JVM_OPTS"
else
  JOPTS=(-Xmx768m -XX:+UseSerialGC)
fi
JOPTS+=(-Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true)
if [[ ! -f "$logdirs/meta.properties" ]]; then
  java "${JOPTS[@]}" -cp "$CP" kafka.tools.StorageTool format -t "$(java -cp "$CP" kafka.tools.StorageTool random-uuid)" -c "$props"
fi
exec java "${JOPTS[@]}" -cp "$CP" kafka.Kafka "$props"
