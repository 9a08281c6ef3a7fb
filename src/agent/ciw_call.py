"""The client side of the agent daemon (`agent.py --call SOCKET JSON`): one request in, the reply header out.
Kept to the few modules it needs, since it starts once per call on AgentCube."""
import json
import os
import socket

from ciw_common import LineReader


def call_main(socket_path, request_json):
    """One request to the daemon; prints the reply header (stream events are not wanted here)."""
    request = request_json if not request_json.startswith("@") else open(request_json[1:], encoding="utf-8").read()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(socket_path)
    except OSError as exc:
        print(json.dumps({"ok": False, "code": "AGENT_NOT_RUNNING", "message": "the agent daemon is not running: %s" % exc}))
        return 3
    conn.sendall(request.strip().encode("utf-8") + b"\n")
    reader = LineReader(conn.makefile("rb", buffering=0))
    while True:
        line = reader.readline()
        if not line:
            print(json.dumps({"ok": False, "code": "AGENT_NOT_RUNNING", "message": "the agent daemon closed the connection"}))
            return 3
        header = json.loads(line)
        if "event" in header:
            continue
        if header.get("blob"):
            reader.read_exact(header["blob"])
        os.write(1, line + b"\n")
        return 0
