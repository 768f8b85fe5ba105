#!/bin/sh
# The systemd test's guest side (xtask/src/vm/systemd.rs): run by a unit at
# boot on a Debian root with systemd as PID 1. Installs mcptap as shipped
# (`mcptap install systemd`: the unit and its hardening as they are), starts
# it, drives an MCP server (tests/peers/hostile.py's stdio server and
# client: the standard library only), finds the calls where the unit sends
# events, restarts it (its state kept), stops it (cleanly). Writes `ok`, or
# what failed, to /root/result, then powers the machine off.
exec > /root/guest.log 2>&1
set -x
cd /root
EVENTS=/var/log/mcptap/events.jsonl
STATE=/var/lib/mcptap

fail() {
    echo "$*" > /root/result
    systemctl status mcptap --no-pager
    journalctl -u mcptap --no-pager | tail -60
    sync
    systemctl poweroff
    exit 1
}

ready() {
    python3 - <<'PY'
import time, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen("http://127.0.0.1:9464/readyz", timeout=2).status == 200:
            raise SystemExit(0)
    except SystemExit:
        raise
    except Exception:
        pass
    time.sleep(0.5)
raise SystemExit(1)
PY
}

# A stdio MCP exchange; prints the server's pid.
exchange() {
    python3 hostile.py client '{"steps":[{"initialize":{"client_name":"'"$1"'"}},{"call":"add","repeat":3}]}' \
        | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["server_pid"])'
}

# The exchange's calls in the events file: initialize and four tools/call
# (three add, and the client's last add), all ok.
recorded() {
    python3 - "$1" "$EVENTS" <<'PY'
import json, sys, time
pid, path = int(sys.argv[1]), sys.argv[2]
for _ in range(240):
    try:
        ops = [e for e in map(json.loads, open(path)) if e.get("event.type") == "mcp.operation"
               and e.get("server", {}).get("process", {}).get("pid") == pid]
    except FileNotFoundError:
        ops = []
    calls = [e for e in ops if e.get("mcp.method.name") == "tools/call" and e.get("status") == "ok"]
    if len(calls) == 4 and any(e.get("mcp.method.name") == "initialize" for e in ops):
        raise SystemExit(0)
    time.sleep(0.5)
print(f"server {pid}: {len(ops)} operations recorded", file=sys.stderr)
raise SystemExit(1)
PY
}

./mcptap install systemd || fail "mcptap install systemd failed"
systemctl daemon-reload
systemctl start mcptap || fail "systemctl start mcptap failed"
ready || fail "mcptap never became ready"
systemctl show mcptap -p User -p CapabilityBoundingSet -p ProtectSystem -p NoNewPrivileges
pid=$(exchange systemd-e2e-1) || fail "the first MCP exchange failed"
recorded "$pid" || fail "the first exchange is not in $EVENTS"
key=$(sha256sum "$STATE/identity.key" | cut -d' ' -f1) || fail "no identity key in $STATE"

systemctl restart mcptap || fail "systemctl restart mcptap failed"
ready || fail "mcptap never became ready after the restart"
[ "$(sha256sum "$STATE/identity.key" | cut -d' ' -f1)" = "$key" ] || fail "the state was not kept across the restart"
pid=$(exchange systemd-e2e-2) || fail "the second MCP exchange failed"
recorded "$pid" || fail "the second exchange is not in $EVENTS"

systemctl stop mcptap
result=$(systemctl show mcptap -p Result --value)
status=$(systemctl show mcptap -p ExecMainStatus --value)
[ "$result" = success ] && [ "$status" = 0 ] || fail "systemctl stop: Result=$result ExecMainStatus=$status"
journalctl -u mcptap --no-pager | grep -q "mcptap stopped" || fail "the agent's log does not say it stopped"
journalctl -u mcptap --no-pager | tail -20
echo ok > /root/result
sync
systemctl poweroff
