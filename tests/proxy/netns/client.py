"""An app in the "pod" that knows nothing about sharewall: no proxy settings, direct connections.

Prints one JSON object: what it sent and what came back (or how the connection ended).

    python client.py http ADDR PORT HOST [--path P] [--body B] [--purpose P]
    python client.py https ADDR PORT SNI --cafile CA [--path P] [--body B] [--purpose P]
    python client.py raw ADDR PORT [--send BYTES]
    python client.py udp ADDR PORT
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl


def _request(args: argparse.Namespace, host: str) -> bytes:
    body = (args.body or "").encode()
    method = "POST" if body else "GET"
    lines = [f"{method} {args.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if args.purpose:
        lines.append(f"X-Sharewall-Purpose: {args.purpose}")
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError, OSError):
        pass
    return data


def _answer(raw: bytes) -> dict:
    if not raw:
        return {"closed": True, "status": None}
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return {"closed": False, "status": status, "headers": headers, "body": body.decode("latin-1")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("http", "https", "raw", "udp"))
    parser.add_argument("addr")
    parser.add_argument("port", type=int)
    parser.add_argument("name", nargs="?")
    parser.add_argument("--path", default="/")
    parser.add_argument("--body")
    parser.add_argument("--purpose")
    parser.add_argument("--cafile")
    parser.add_argument("--send", default="")
    parser.add_argument("--timeout", type=float, default=8.0)
    args = parser.parse_args()
    result: dict = {}
    if args.mode == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        try:
            sock.sendto(b"ping", (args.addr, args.port))
            data, _ = sock.recvfrom(1024)
            result = {"reply": data.decode()}
        except (TimeoutError, OSError) as exc:
            result = {"reply": None, "error": type(exc).__name__}
        print(json.dumps(result))
        return
    try:
        sock = socket.create_connection((args.addr, args.port), timeout=args.timeout)
    except OSError as exc:
        print(json.dumps({"connect_error": type(exc).__name__}))
        return
    with sock:
        if args.mode == "raw":
            if args.send:
                sock.sendall(args.send.encode())
            result = {"received": _read_all(sock).decode("latin-1")}
        elif args.mode == "http":
            sock.sendall(_request(args, args.name))
            result = _answer(_read_all(sock))
        else:
            ctx = ssl.create_default_context(cafile=args.cafile)
            try:
                tls = ctx.wrap_socket(sock, server_hostname=args.name)
            except (ssl.SSLError, OSError) as exc:
                print(json.dumps({"tls_error": type(exc).__name__, "closed": True}))
                return
            issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
            tls.sendall(_request(args, args.name))
            result = _answer(_read_all(tls))
            result["issuer"] = issuer.get("organizationName") or issuer.get("commonName")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
