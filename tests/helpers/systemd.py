"""Stand-ins for systemd-run and systemctl (this machine's PID 1 is not systemd)."""

from __future__ import annotations

SYSTEMD_RUN = r'''#!PYTHON
import json, os, subprocess, sys
state = os.environ["STUB_STATE"]
args, props, unit = sys.argv[1:], {}, None
while args and args[0] != "--":
    a = args.pop(0)
    if a == "--unit": unit = args.pop(0)
    elif a == "-p": k, _, v = args.pop(0).partition("="); props[k] = v
    elif a in ("--quiet", "--collect"): pass
    else: sys.exit(f"stub systemd-run: unexpected {a}")
cmd = args[1:]
err = props["StandardError"].removeprefix("file:")
with open(err, "ab") as fh:
    p = subprocess.Popen(cmd, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL,
                         start_new_session=True)
with open(os.path.join(state, unit + ".json"), "w") as fh:
    json.dump({"pid": p.pid, "props": props, "cmd": cmd}, fh)
'''


SYSTEMCTL = r'''#!PYTHON
import json, os, signal, sys, time
state = os.environ["STUB_STATE"]
args = [a for a in sys.argv[1:] if a not in ("--quiet", "--")]
verb, unit = args[0], args[1]
path = os.path.join(state, unit + ".json")
with open(os.path.join(state, "calls.log"), "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\n")
def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(l for l in fh if l.startswith("State:")).split()[1] != "Z"
    except OSError:
        return False
pid = json.load(open(path))["pid"] if os.path.exists(path) else None
if verb == "is-active":
    sys.exit(0 if pid and alive(pid) else 3)
if verb == "stop":
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if not alive(pid): break
            time.sleep(0.02)
    sys.exit(0)
if verb == "reset-failed":
    sys.exit(0)
sys.exit(f"stub systemctl: unexpected {verb}")
'''
