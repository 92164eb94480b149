#!/bin/bash
# Runs inside the Debian 12 smoke VM (scripts/vm/smoke.sh) as a oneshot
# systemd service after boot: installs the release tarball the documented
# way, runs both units under systemd and checks what an operator would.
# Results: /var/log/tapio-smoke/result (one PASS/FAIL line per check),
# then the VM powers off.
out=/var/log/tapio-smoke
mkdir -p "$out"
exec > "$out/log" 2>&1
set -x
result() { echo "$1: $2" | tee -a "$out/result" > /dev/console; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    if [ "$(date +%s)" -ge "$end" ]; then result FAIL "$what (not within ${secs} s)"; return 1; fi
    sleep 1
  done
  result PASS "$what"
}
finish() { echo DONE >> "$out/result"; sync; systemctl poweroff; exit 0; }
t0=$(date +%s)

# 1. Install, following docs/operations.md.
cd /root
tar -xzf tapio-*-linux.tar.gz && cd tapio-*-linux && ./install.sh && systemctl daemon-reload \
  && result PASS "install from the release tarball" || { result FAIL "install"; finish; }
tapio-agent check --human > "$out/check.txt" 2>&1 && result PASS "tapio-agent check" || result FAIL "tapio-agent check (see check.txt)"

# 2. Configure both units through their environment files, no flag twice.
mkdir -p /etc/tapio
cp /usr/local/share/tapio/profiles/production-default.yaml /etc/tapio/profile.yaml
cat > /etc/default/tapio-controller <<CFG
TAPIO_LISTEN=127.0.0.1:7070
TAPIO_PROFILE=/etc/tapio/profile.yaml
TAPIO_CONTROLLER_ARGS="--config-poll-interval-secs 1 --heartbeat-interval-secs 2"
CFG
echo 'TAPIO_AGENT_ARGS="--controller http://127.0.0.1:7070"' > /etc/default/tapio-agent
# node_exporter reads the agent's metrics directory.
echo 'ARGS="--web.listen-address=127.0.0.1:9100 --collector.textfile.directory=/run/tapio-metrics"' > /etc/default/prometheus-node-exporter
systemctl restart prometheus-node-exporter
systemctl enable --now tapio-controller tapio-agent
wait_for 90 "agent attached every observer under systemd" \
  sh -c 'journalctl -u tapio-agent --no-pager | grep -q "observer process attached"'
journalctl -u tapio-agent --no-pager | grep -E "observer .* (attached|failed)" > "$out/observers.txt"

# 3. A refused connect, in the agent's store and the controller's export.
bash -c ': > /dev/tcp/127.0.0.1/9' 2>/dev/null
wait_for 60 "refused connect in the agent's store" \
  sh -c 'tapio events --type connection_refused --port 9 --json --data-dir /var/lib/tapio | grep -q dst_port'
wait_for 60 "refused connect in the controller's export" \
  sh -c 'cat /var/lib/tapio-controller/export/*/* /var/lib/tapio-controller/export/* 2>/dev/null | grep -q "\"dst_port\":9"'

# 4. node_exporter serves the agent's metrics (file 0644 in a 0755 dir).
stat -c '%a %U %n' /run/tapio-metrics /run/tapio-metrics/tapio.prom > "$out/metrics-files.txt" 2>&1
wait_for 30 "node_exporter serves tapio_events_total" \
  sh -c 'curl -sf http://127.0.0.1:9100/metrics | grep -Eq "^tapio_events_total\{.*connection_refused.*\} [1-9]"'
curl -s http://127.0.0.1:9100/metrics > "$out/node-exporter.txt" 2>&1
systemctl status prometheus-node-exporter --no-pager > "$out/node-exporter-status.txt" 2>&1
journalctl -u prometheus-node-exporter --no-pager >> "$out/node-exporter-status.txt" 2>&1
curl -sf http://127.0.0.1:9100/metrics | grep -q '^node_textfile_scrape_error 0' \
  && result PASS "node_exporter parsed the textfile" || result FAIL "node_exporter textfile scrape error"
tapio metrics --check > "$out/metrics-check.txt" 2>&1 && result PASS "tapio metrics --check: no losses" \
  || result FAIL "tapio metrics --check (see metrics-check.txt)"

# 5. systemctl reload applies a profile change: the controller serves
# config_version 2 and the agent reports it applied (its heartbeat).
cp /usr/local/share/tapio/profiles/web-tier.yaml /etc/tapio/profile.yaml
systemctl reload tapio-controller
wait_for 60 "systemctl reload: the agent applied the new profile (config_version 2)" \
  sh -c 'curl -sf http://127.0.0.1:7070/v1/status | grep -o "\"config_version\":\"2\"" | wc -l | grep -q "^[2-9]"'
curl -sf http://127.0.0.1:7070/v1/status > "$out/status.json"

# 6. A warning we cause reaches journald with its priority.
cp /etc/tapio/profile.yaml /etc/tapio/profile.good
echo 'not: [valid' >> /etc/tapio/profile.yaml
systemctl reload tapio-controller
wait_for 30 "journalctl -p warning shows the rejected reload" \
  sh -c 'journalctl -u tapio-controller -p warning --no-pager | grep -q "rejected"'
journalctl -u tapio-controller -p warning --no-pager > "$out/warnings.txt"
cp /etc/tapio/profile.good /etc/tapio/profile.yaml

# 7. systemctl stop drains and exits 0.
systemctl stop tapio-agent
[ "$(systemctl show -p Result --value tapio-agent)" = success ] \
  && [ "$(systemctl show -p ExecMainStatus --value tapio-agent)" = 0 ] \
  && result PASS "systemctl stop: drained, exit 0" || result FAIL "systemctl stop: $(systemctl show -p Result -p ExecMainStatus tapio-agent | tr '\n' ' ')"
systemctl stop tapio-controller
journalctl -u tapio-agent -u tapio-controller --no-pager > "$out/journal.txt"
echo "guest seconds: $(( $(date +%s) - t0 ))" >> "$out/result"
finish
