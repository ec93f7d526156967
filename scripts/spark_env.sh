#!/usr/bin/env bash
# Spark with Java Iceberg as another writer of our tables (tests/e2e/test_external_writers.py).
#
#   bash scripts/spark_env.sh [PYTHON]        apt packages (as root) + the Jackson jar
#   bash scripts/spark_env.sh --jar-only [PYTHON]
#
# PYTHON is the interpreter whose site-packages hold pyspark 3.5 and snowpark-connect-deps-iceberg
# (tests/requirements.txt); default: the test venv. Java: Debian's JRE 17 (Spark 3.5 runs on
# it); the JDBC catalog over our SQLite catalog.db: Debian's xerial sqlite-jdbc.
#
# The Iceberg Spark runtime jar in snowpark-connect-deps-iceberg (1.10.2, Spark 3.5, Scala
# 2.12) refers to a relocated Jackson (org.apache.iceberg.shaded.com.fasterxml.jackson) that
# it does not contain. We rebuild it with Debian's jarjar from the Jackson jars Spark ships.
set -euo pipefail

jar_only=0
if [ "${1:-}" = "--jar-only" ]; then
  jar_only=1
  shift
fi
PYTHON="${1:-${MOONLINK_VENV:-$HOME/.cache/moonlink-venv}/bin/python}"
OUT="${MOONLINK_SPARK_DIR:-$HOME/.cache/moonlink-spark}"

if [ "$jar_only" = 0 ]; then
  need=()
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  [ -f /usr/share/java/jarjar.jar ] || need+=(libjarjar-java)
  [ -f /usr/share/java/sqlite-jdbc.jar ] || need+=(libxerial-sqlite-jdbc-java)
  command -v zip >/dev/null 2>&1 || need+=(zip)
  command -v unzip >/dev/null 2>&1 || need+=(unzip)
  if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
fi

jars="$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
jackson="$OUT/iceberg-jackson-shaded.jar"
if [ ! -f "$jackson" ]; then
  mkdir -p "$OUT"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir "$work/classes"
  for name in jackson-core jackson-databind jackson-annotations; do
    found=("$jars"/"$name"-2.*.jar)
    (cd "$work/classes" && unzip -qo "${found[0]}" -x 'META-INF/*')
  done
  rm -f "$work/classes/module-info.class"
  (cd "$work/classes" && zip -qr "$work/jackson.jar" .)
  echo 'rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1' >"$work/rules"
  java -jar /usr/share/java/jarjar.jar process "$work/rules" "$work/jackson.jar" "$jackson.tmp"
  mv "$jackson.tmp" "$jackson"
fi
echo "$jackson"
