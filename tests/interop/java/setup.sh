#!/usr/bin/env bash
# Fetches Apache Kafka's own client, broker and CLI tool jars from Maven Central into
# tests/interop/java/lib and compiles the interop programs under src/ into build/.
# Idempotent: the download is skipped while lib/ matches pom.xml, the compile while the
# classes are newer than their sources.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
LIB="$HERE/lib"
BUILD="$HERE/build"

for tool in java javac mvn; do
  command -v "$tool" >/dev/null || { echo "setup.sh: '$tool' not found (need a JDK 17+ and Maven)" >&2; exit 1; }
done

stamp="$(sha256sum pom.xml | cut -d' ' -f1)"
if [[ -f "$LIB/.stamp" && "$(cat "$LIB/.stamp")" == "$stamp" ]] && ls "$LIB"/kafka-clients-*.jar >/dev/null 2>&1; then
  :
else
  rm -rf "$LIB"
  mkdir -p "$LIB"
  mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
  echo "$stamp" > "$LIB/.stamp"
fi

mkdir -p "$BUILD"
shopt -s nullglob
srcs=(src/*.java)
need_compile=0
for src in "${srcs[@]}"; do
  cls="$BUILD/$(basename "${src%.java}").class"
  if [[ ! -f "$cls" || "$src" -nt "$cls" ]]; then need_compile=1; fi
done
if [[ $need_compile == 1 ]]; then
  javac -nowarn -d "$BUILD" -cp "$LIB/*" "${srcs[@]}"
fi
echo "java interop ready: lib=$LIB build=$BUILD"
