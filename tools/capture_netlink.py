"""One-off: capture request/ack bytes from the real kernel and the CLI's own request."""
import json, os, re, socket, subprocess, sys
sys.path.insert(0, '/work/main')
from tests.functional import netns
from conntrack_lib import netlink
from conntrack_lib.privileged import netlink as pn

SAMPLES = {
 "udp4_zone7": (dict(family="ipv4", protonum=17, src="10.1.2.3", dst="10.4.5.6", sport=1000, dport=53, icmp_type=None, icmp_code=None, icmp_id=None, zone=7),
   "-p udp -s 10.1.2.3 -d 10.4.5.6 --sport 1000 --dport 53 -w 7", "-t 300"),
 "tcp6_zone0": (dict(family="ipv6", protonum=6, src="fd00::1", dst="fd00::2", sport=40000, dport=443, icmp_type=None, icmp_code=None, icmp_id=None, zone=0),
   "-p tcp -s fd00::1 -d fd00::2 --sport 40000 --dport 443", "--state ESTABLISHED -t 300"),
 "icmp4_zone3": (dict(family="ipv4", protonum=1, src="10.0.0.1", dst="10.0.0.2", sport=None, dport=None, icmp_type=8, icmp_code=0, icmp_id=4660, zone=3),
   "-p icmp -s 10.0.0.1 -d 10.0.0.2 --icmp-type 8 --icmp-code 0 --icmp-id 4660 -w 3", "-t 30"),
 "icmpv6_zone0": (dict(family="ipv6", protonum=58, src="fd00::1", dst="fd00::2", sport=None, dport=None, icmp_type=128, icmp_code=0, icmp_id=77, zone=0),
   "-p icmpv6 -s fd00::1 -d fd00::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 77", "-t 30"),
 "sctp4_zone65535": (dict(family="ipv4", protonum=132, src="10.9.8.7", dst="10.6.5.4", sport=5000, dport=6000, icmp_type=None, icmp_code=None, icmp_id=None, zone=65535),
   "-p sctp -s 10.9.8.7 -d 10.6.5.4 --sport 5000 --dport 6000 -w 65535", "--state ESTABLISHED --orig-vtag 1 --reply-vtag 2 -t 300"),
}

def cli_delete_bytes(ns, filt):
    out = '/tmp/ctcap/strace.txt'
    subprocess.run([netns.IP, 'netns', 'exec', ns, 'strace', '-e', 'trace=sendto', '-e', 'write=3,4,5', '-o', out,
                    netns.CONNTRACK, '-D', *filt.split()], capture_output=True, check=True)
    lines = open(out).read().splitlines()
    start = next(i for i, l in enumerate(lines) if 'IPCTNL_MSG_CT_DELETE' in l)
    hexbytes = []
    for l in lines[start + 1:]:
        m = re.match(r'\s*\| [0-9a-f]{5}  (.{48})', l)
        if not m: break
        hexbytes += m.group(1).split()
    return bytes.fromhex(''.join(hexbytes))

def kernel_exchange(ns, body):
    fd = os.open('/run/netns/' + ns, os.O_RDONLY)
    sock = pn._run_in_namespace(fd, ns, pn._new_socket); os.close(fd)
    sock.setblocking(True)
    req = netlink.encode_message(body, 1)
    sock.send(req); ack = sock.recv(4096)
    sock.send(netlink.encode_message(body, 2)); ack2 = sock.recv(4096)
    sock.close()
    return req, ack, ack2

for name, (flow, filt, extra) in SAMPLES.items():
    with netns.namespace('ctcap') as ns:
        ins = f"-I {filt} {extra}".split()
        netns.run(ns, ins, check=True)
        cli = cli_delete_bytes(ns, filt)
        assert netns.table(ns) == []
        netns.run(ns, ins, check=True)
        req, ack, ack2 = kernel_exchange(ns, netlink.encode_body(netlink.validate_flow(flow)))
        assert netns.table(ns) == [], name
        assert netlink.decode_acks(ack) == [(1, 0)] and netlink.decode_acks(ack2) == [(2, 2)], (ack, ack2)
    with open(f'/work/main/tests/unit/data/netlink_{name}.hex', 'w') as f:
        f.write(f"# Captured on Linux {os.uname().release} with conntrack-tools 1.4.7 in a throwaway netns.\n"
                f"# flow: primitive form of the flow that was inserted with: conntrack -I {filt} {extra}\n"
                "# request: this library's IPCTNL_MSG_CT_DELETE (seq 1), which deleted the flow\n"
                "# ack: the kernel's reply to it (errno 0); ack_enoent: reply to the same request re-sent (seq 2)\n"
                f"# cli_request: what `conntrack -D {filt}` sent for the same flow (strace -e write)\n")
        f.write("flow " + json.dumps(flow, sort_keys=True) + "\n")
        for key, data in (("request", req), ("ack", ack), ("ack_enoent", ack2), ("cli_request", cli)):
            f.write(f"{key} {data.hex()}\n")
    print(name, 'ok', len(req), len(cli))
