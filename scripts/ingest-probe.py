#!/usr/bin/env python3
"""Stalled-body probe of `runwatch ingest` (docs/security.md "Webhook receiver bounds").

N clients each declare a body of DECLARED bytes to /webhooks/github, send SENT bytes of it
and stop, without a valid signature. Prints the server's resident memory (VmRSS of
/proc/PID/status) before and at its peak while the clients hold on, and the answers.

    scripts/ingest-probe.py HOST:PORT PID [N [DECLARED [SENT [HOLD_SECONDS]]]]

Defaults: 150 clients, 1000000 declared, 999000 sent, hold 40 s (past the default
ingest.body_read_timeout of 30 s). Standard library only.
"""

import collections
import socket
import sys
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def client(addr, declared, sent, hold, answers, lock):
    status = "closed"
    try:
        s = socket.create_connection(addr, timeout=hold + 10)
        head = (
            "POST /webhooks/github HTTP/1.1\r\nHost: probe\r\n"
            f"Content-Length: {declared}\r\nX-GitHub-Event: workflow_run\r\n"
            "X-Hub-Signature-256: sha256=00\r\n\r\n"
        )
        s.sendall(head.encode() + b" " * sent)
        data = s.recv(64)
        if data.startswith(b"HTTP/1.1 "):
            status = data[9:12].decode()
        s.close()
    except OSError as e:
        status = type(e).__name__
    with lock:
        answers[status] += 1


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    n, declared, sent, hold = ([int(a) for a in sys.argv[3:7]] + [150, 1000000, 999000, 40][len(sys.argv[3:7]):])
    answers, lock = collections.Counter(), threading.Lock()
    before = rss_kib(pid)
    threads = [
        threading.Thread(target=client, args=((host, int(port)), declared, sent, hold, answers, lock), daemon=True)
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    peak, deadline = before, time.time() + hold
    while time.time() < deadline and any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
    print(f"clients={n} declared={declared} sent={sent}")
    print(f"rss_before_kib={before} rss_peak_kib={peak} growth_mib={(peak - before) / 1024:.1f}")
    print("answers=" + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))


if __name__ == "__main__":
    main()
