#!/usr/bin/env python3
"""Live flows for the real-node restart tests, run inside a pod's network namespace
(`nsenter -t <container pid> -n python3 flows.py ...`), so every packet crosses the pod's veth,
Palisade's programs and kube-proxy's DNAT like the pod's own traffic.

  flows.py server TCP_PORT UDP_PORT
      echo server: TCP (line-based) and UDP (datagram), until killed.
  flows.py client HOST TCP_PORT UDP_PORT SECONDS
      one TCP connection and one UDP flow, a numbered message each every 20 ms, each echoed;
      prints JSON: sent/echoed per protocol, UDP datagrams lost, the TCP connection's
      retransmissions (TCP_INFO: a dropped segment is retransmitted, so 0 means nothing lost)
      and the longest wait for an echo.
  flows.py intruder HOST TCP_PORT UDP_PORT SECONDS
      a denied peer: a new TCP connection and a UDP datagram every 100 ms; prints JSON: how many
      connected or were answered (must be 0).
"""

import json
import select
import socket
import struct
import sys
import threading
import time

INTERVAL = 0.02


def server(tcp_port, udp_port):
    def tcp_conn(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def tcp():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", tcp_port))
        s.listen(64)
        while True:
            conn, _ = s.accept()
            threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()

    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", udp_port))
        while True:
            data, peer = s.recvfrom(65536)
            s.sendto(data, peer)

    threading.Thread(target=tcp, daemon=True).start()
    udp()


def tcp_total_retrans(sock):
    # struct tcp_info: tcpi_total_retrans is the u32 at byte 100 (linux/tcp.h).
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 100)[0]


def client(host, tcp_port, udp_port, seconds):
    result = {"tcp_sent": 0, "tcp_echoed": 0, "tcp_retransmissions": 0, "tcp_error": None,
              "udp_sent": 0, "udp_echoed": 0, "udp_lost": 0, "max_echo_wait_ms": 0.0}
    deadline = time.monotonic() + seconds
    tcp = socket.create_connection((host, tcp_port), timeout=5)
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((host, udp_port))
    udp.setblocking(False)
    seen = set()
    buf = b""
    seq = 0
    pending = {}
    while time.monotonic() < deadline:
        seq += 1
        msg = b"%08d\n" % seq
        sent_at = time.monotonic()
        try:
            tcp.sendall(msg)
            result["tcp_sent"] += 1
        except OSError as e:
            result["tcp_error"] = str(e)
            break
        udp.send(msg)
        result["udp_sent"] += 1
        pending[seq] = sent_at
        # Wait for the TCP echo of this message (TCP retransmits what a drop loses, so a wait
        # is how a drop would show: as the longest wait and as retransmissions).
        while buf.count(b"\n") < 1:
            r, _, _ = select.select([tcp], [], [], 5)
            if not r:
                result["tcp_error"] = "no echo within 5 s"
                break
            chunk = tcp.recv(65536)
            if not chunk:
                result["tcp_error"] = "connection closed"
                break
            buf += chunk
        if result["tcp_error"]:
            break
        line, buf = buf.split(b"\n", 1)
        if int(line) == seq:
            result["tcp_echoed"] += 1
        result["max_echo_wait_ms"] = max(result["max_echo_wait_ms"],
                                         (time.monotonic() - sent_at) * 1000)
        while True:
            try:
                seen.add(int(udp.recv(64)))
            except (BlockingIOError, ValueError):
                break
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - sent_at)))
    # Late echoes.
    end = time.monotonic() + 1
    while time.monotonic() < end:
        r, _, _ = select.select([udp], [], [], 0.1)
        if r:
            seen.add(int(udp.recv(64)))
    result["udp_echoed"] = len(seen)
    result["udp_lost"] = result["udp_sent"] - len(seen)
    try:
        result["tcp_retransmissions"] = tcp_total_retrans(tcp)
    except OSError:
        pass
    tcp.close()
    print(json.dumps(result))


def intruder(host, tcp_port, udp_port, seconds):
    result = {"tcp_attempts": 0, "tcp_connected": 0, "udp_sent": 0, "udp_answered": 0}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((host, udp_port))
    udp.setblocking(False)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result["tcp_attempts"] += 1
        try:
            socket.create_connection((host, tcp_port), timeout=0.1).close()
            result["tcp_connected"] += 1
        except OSError:
            pass
        udp.send(b"intruder\n")
        result["udp_sent"] += 1
        while True:
            try:
                udp.recv(64)
                result["udp_answered"] += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
        time.sleep(0.1)
    print(json.dumps(result))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "server":
        server(int(args[0]), int(args[1]))
    elif mode == "client":
        client(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "intruder":
        intruder(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
