#!/usr/bin/env bash
# Starts containerd and dockerd when they are not running (machines here have no init system for
# them), and waits until the engine answers. Idempotent.
set -euo pipefail

log_dir=/var/log/teledock
mkdir -p "$log_dir"

# Docker's containerd is judged by whether its socket answers: the built-in cluster runs a
# containerd of its own (so a process name proves nothing), a killed containerd leaves its socket
# file behind (so the file proves nothing either), and dockerd answers `docker info` without its
# containerd (so that proves nothing either). Only a dockerd started on that socket (as below, and
# as Debian's service does) is checked this way.
sock=/run/containerd/containerd.sock
containerd_answers() { timeout 5 ctr --address "$sock" version >/dev/null 2>&1; }
uses_sock() { pgrep -a dockerd | grep -q -- "--containerd=$sock"; }
if docker info >/dev/null 2>&1 && { ! uses_sock || containerd_answers; }; then
  exit 0
fi

if ! command -v dockerd >/dev/null; then
  echo "dockerd is not installed: run scripts/install-deps.sh (as root)" >&2
  exit 1
fi

# A dockerd killed mid-flight leaves its pid file and socket; remove them so it starts again. The
# pid may belong to another process by now, so the name is checked, not just that it lives.
runs_as() { [ "$(cat "/proc/$(cat "$1" 2>/dev/null)/comm" 2>/dev/null)" = "$2" ]; }
if [ -f /var/run/docker.pid ] && ! runs_as /var/run/docker.pid dockerd; then
  rm -f /var/run/docker.pid /var/run/docker.sock
fi
if [ -f /run/containerd/containerd.pid ] && ! runs_as /run/containerd/containerd.pid containerd; then
  rm -f /run/containerd/containerd.pid
fi

if ! containerd_answers; then
  # A containerd that still runs but does not answer is hung: replace it.
  for pid in $(pgrep -x containerd || true); do
    if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'teledock-cluster'; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$sock"
  echo "starting containerd (log: $log_dir/containerd.log)"
  nohup containerd >"$log_dir/containerd.log" 2>&1 &
  for _ in $(seq 1 100); do containerd_answers && break; sleep 0.1; done
fi

if ! pgrep -x dockerd >/dev/null; then
  echo "starting dockerd (log: $log_dir/dockerd.log)"
  nohup dockerd --containerd=/run/containerd/containerd.sock >"$log_dir/dockerd.log" 2>&1 &
fi

deadline=$((SECONDS + 60))
# A running dockerd reconnects to a restarted containerd by itself; `docker version` shows the
# containerd it reaches.
until docker info >/dev/null 2>&1 && docker version --format '{{range .Server.Components}}{{.Name}} {{end}}' 2>/dev/null | grep -q containerd; do
  if [ $SECONDS -ge $deadline ]; then
    echo "dockerd did not answer within 60s; last log lines:" >&2
    tail -n 20 "$log_dir/dockerd.log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "docker is up: $(docker version --format '{{.Server.Version}}')"
