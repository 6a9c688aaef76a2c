"""Nodes on separate hosts: one network namespace per node, joined by a bridge, so a test can
cut one node off from the others while the clients (in the root namespace) still reach it.

Each namespace gets a veth pair whose outer end is on the bridge; node i listens on
`10.A.B.(10+i)` (ports 9092 for clients, 9093 for the controller listener, the same in
every namespace) and the root namespace has `10.A.B.1` on the bridge. A cut is a pair of
blackhole routes (in the node's namespace towards each peer, and in each peer's towards the
node): packets between them go nowhere, in both directions, while traffic with the root
namespace is untouched. Only iproute2 is needed (no iptables or tc qdiscs, which minimal
kernels lack). Everything needs root; `netns_available()` says whether it works here.
"""

import os
import random
import subprocess

from cluster import Cluster, Node

KAFKA_PORT = 9092
CONTROLLER_PORT = 9093


def ip(*args, netns=None, check=True):
    cmd = ["ip"] + (["netns", "exec", netns, "ip"] if netns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def netns_available():
    """None when network namespaces and bridges can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"skprobe{os.getpid()}"
    try:
        ip("netns", "add", name)
        ip("link", "add", f"{name}b", "type", "bridge")
    except (RuntimeError, FileNotFoundError) as e:
        return f"cannot create a network namespace and a bridge: {e}"
    finally:
        ip("link", "del", f"{name}b", check=False)
        ip("netns", "del", name, check=False)
    return None


class Lab:
    """The bridge and one namespace per node id; `close()` removes everything."""

    def __init__(self, node_ids):
        tag = f"{os.getpid() % 10000}{random.randrange(100):02d}"
        self.bridge = f"skb{tag}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(256)}"
        self.ns = {i: f"sk{tag}n{i}" for i in node_ids}
        self.cuts = set()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, ns in self.ns.items():
            outer, inner = f"skv{tag}{i}", f"skv{tag}{i}i"
            ip("netns", "add", ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "master", self.bridge)
            ip("link", "set", outer, "up")
            ip("addr", "add", f"{self.host(i)}/24", "dev", inner, netns=ns)
            ip("link", "set", inner, "up", netns=ns)
            ip("link", "set", "lo", "up", netns=ns)

    def host(self, i):
        return f"{self.subnet}.{10 + i}"

    def cut(self, i):
        """Cuts node i off from every other node (not from the root namespace)."""
        for j in self.ns:
            if j != i and (i, j) not in self.cuts:
                ip("route", "add", "blackhole", f"{self.host(j)}/32", netns=self.ns[i])
                ip("route", "add", "blackhole", f"{self.host(i)}/32", netns=self.ns[j])
                self.cuts.add((i, j))

    def heal(self):
        for i, j in sorted(self.cuts):
            ip("route", "del", "blackhole", f"{self.host(j)}/32", netns=self.ns[i], check=False)
            ip("route", "del", "blackhole", f"{self.host(i)}/32", netns=self.ns[j], check=False)
        self.cuts.clear()

    def close(self):
        self.heal()
        for ns in self.ns.values():
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)


class NetnsNode(Node):
    """A node running inside its namespace, listening on its own address."""

    def __init__(self, lab, node_id, data_dir, quorum, sets=()):
        super().__init__(node_id, data_dir, KAFKA_PORT, CONTROLLER_PORT, quorum, sets=sets)
        self.lab = lab
        self.host = lab.host(node_id)

    def __repr__(self):
        return f"NetnsNode({self.node_id}, {self.host}, netns {self.lab.ns[self.node_id]})"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def command(self, port):
        # The node's own address instead of loopback for both listeners (the HTTP one stays
        # on the namespace's loopback).
        own = {
            f"127.0.0.1:{port}": f"{self.host}:{port}",
            f"127.0.0.1:{self.controller_port}": f"{self.host}:{self.controller_port}",
        }
        args = [own.get(a, a) for a in super().command(port)]
        return ["ip", "netns", "exec", self.lab.ns[self.node_id]] + args


class NetnsCluster(Cluster):
    """A Cluster whose voters each run in their own namespace of `lab`."""

    def __init__(self, base_dir, lab, voters=3, sets=(), registry=None):
        super().__init__(base_dir, voters=voters, sets=sets, registry=registry)
        self.lab = lab

    def new_voters(self):
        self.quorum = ",".join(f"{i}@{self.lab.host(i)}:{CONTROLLER_PORT}" for i in self.voter_ids)
        return {
            i: NetnsNode(
                self.lab, i, self.base_dir / f"attempt{self.attempt}" / f"node{i}", self.quorum, sets=self.sets
            )
            for i in self.voter_ids
        }
