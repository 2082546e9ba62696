#!/usr/bin/env bash
# What the test suite needs besides Python packages: Debian's Chromium (browser tests) and a running
# PostgreSQL (persistence tests). Installs/starts them when missing; does nothing when they are there.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  echo "Instalando Chromium (paquete Debian) para las pruebas en navegador…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "Instalando PostgreSQL (paquete Debian)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "Iniciando PostgreSQL $version…"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432
fi

# Redis on 127.0.0.1:6379: web sessions shared by two app instances in the scale tests (tests/scale).
if ! (command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "Instalando Redis (paquete Debian)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  fi
  echo "Iniciando Redis…"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
  for _ in $(seq 1 30); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 1
  done
  redis-cli -h 127.0.0.1 -p 6379 ping
fi

# nginx (the restart drill runs the shipped configuration on loopback high ports, started with -c, never as
# a system service) and promtool from Debian's prometheus package (the alert rules' unit tests, a real scrape).
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Instalando ${missing[*]} (paquetes Debian) para los simulacros de operación…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
