#!/usr/bin/python3
"""A DNS server on loopback for cordon's tests of the `dns` capability.

Serves a fixed zone under `test.` (and two reverse names) over UDP and TCP
on one port of 127.0.0.1, chosen by the system. It prints `listening PORT`
once ready, then `query NAME TYPE` for every query it receives, so a test
can count what reached it (and so what the resolver's cache answered).

Names under `slow.test.` are never answered; `fail.test.` answers
SERVFAIL; names it does not know are NXDOMAIN, and known names asked for
a type they lack are NOERROR with no answer (both with the zone's SOA, so
that resolvers can cache them).

Uses Debian's python3-dnslib.
"""

import socket
import struct
import sys
import threading

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

ZONE = {
    # A DNS block list: the RFC 5782 test entry, and a refused query.
    ("2.0.0.127.bl.test", "A"): [(300, A("127.0.0.2"))],
    ("2.0.0.127.bl.test", "TXT"): [(300, TXT("listed for testing"))],
    ("3.0.0.127.bl.test", "A"): [(300, A("127.255.255.254"))],
    ("2.0.0.127.bl2.test", "A"): [(300, A("127.0.0.4"))],
    ("listed.example.dbl.test", "A"): [(300, A("127.0.1.2"))],
    # One of each record type the contract has.
    ("mail.test", "MX"): [(60, MX("mx1.mail.test", 10)), (120, MX("mx2.mail.test", 20))],
    ("txt.test", "TXT"): [(60, TXT(["v=spf1 ", "-all"]))],
    ("aaaa.test", "AAAA"): [(60, AAAA("2001:db8::1"))],
    ("4.3.2.1.in-addr.arpa", "PTR"): [(60, PTR("host.test"))],
    ("alias.test", "CNAME"): [(60, CNAME("target.test"))],
    ("target.test", "A"): [(60, A("192.0.2.1"))],
    ("ns.test", "NS"): [(60, NS("ns1.test"))],
    ("empty.test", "A"): [(60, A("192.0.2.7"))],
}
SOA_RECORD = RR(
    "test",
    QTYPE.SOA,
    ttl=300,
    rdata=SOA("ns1.test", "admin.test", (1, 3600, 600, 86400, 300)),
)


def known(name):
    return any(n == name for (n, _) in ZONE)


def answer(data):
    """The reply to one query, or None to leave it unanswered."""
    request = DNSRecord.parse(data)
    q = request.q
    name = str(q.qname).rstrip(".").lower()
    qtype = QTYPE[q.qtype]
    print(f"query {name} {qtype}", flush=True)
    if name == "slow.test" or name.endswith(".slow.test"):
        return None
    reply = request.reply()
    if name == "fail.test":
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()
    records = ZONE.get((name, qtype))
    if records is None and qtype in ("A", "AAAA", "TXT", "MX") and (name, "CNAME") in ZONE:
        # Follow the alias, as a recursive server would.
        (ttl, target), = ZONE[(name, "CNAME")]
        reply.add_answer(RR(name, QTYPE.CNAME, ttl=ttl, rdata=target))
        name = str(target.label).rstrip(".")
        records = ZONE.get((name, qtype))
    if records:
        for ttl, rdata in records:
            reply.add_answer(RR(name, getattr(QTYPE, qtype), ttl=ttl, rdata=rdata))
    else:
        if not known(name):
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(SOA_RECORD)
    return reply.pack()


def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            out = answer(data)
        except Exception as e:  # a query the test did not mean to send
            print(f"error {e}", flush=True)
            continue
        if out is not None:
            sock.sendto(out, peer)


def serve_tcp_client(conn):
    with conn:
        while True:
            head = conn.recv(2)
            if len(head) < 2:
                return
            (length,) = struct.unpack("!H", head)
            data = b""
            while len(data) < length:
                chunk = conn.recv(length - len(data))
                if not chunk:
                    return
                data += chunk
            out = answer(data)
            if out is None:
                continue
            conn.sendall(struct.pack("!H", len(out)) + out)


def serve_tcp(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_tcp_client, args=(conn,), daemon=True).start()


def main():
    # One port for both: pick it with UDP, then take it for TCP too.
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(64)
        break
    else:
        sys.exit("dns_server: no port free for both UDP and TCP")
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    print(f"listening {port}", flush=True)
    serve_udp(udp)


if __name__ == "__main__":
    main()
