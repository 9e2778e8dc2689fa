"""The rendered NetworkPolicies allow exactly the paths the services use and nothing else.

Edges are computed the way Kubernetes applies policies: traffic flows when the source's
egress and the destination's ingress both allow it, a pod selected by no policy of a
direction is open in that direction, and rules of all selecting policies add up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.deploy.manifests import NAMESPACE, OVERLAYS, Manifest, of_kind, render, workloads

# Pod addresses in the model: a pod network in 10/8 as most clusters use.
POD_IP = "10.244.1.10"


@dataclass(frozen=True)
class Peer:
    """A party traffic can come from or go to: one of our pods or something outside."""

    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...]
    ip: str
    ports: frozenset[tuple[int, str]]
    ours: bool = field(default=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def outside_peers() -> list[Peer]:
    return [
        Peer(
            "kube-dns",
            "kube-system",
            (("k8s-app", "kube-dns"),),
            "10.96.0.10",
            frozenset({(53, "UDP"), (53, "TCP"), (9153, "TCP")}),
        ),
        Peer(
            "other-namespace-pod",
            "ingress-nginx",
            (("app.kubernetes.io/name", "ingress-nginx"),),
            "10.244.2.20",
            frozenset({(80, "TCP"), (443, "TCP"), (8080, "TCP")}),
        ),
        Peer(
            "internet",
            None,
            (),
            "203.0.113.10",
            frozenset({(443, "TCP"), (80, "TCP"), (22, "TCP"), (53, "UDP")}),
        ),
        Peer(
            "private-network", None, (), "192.168.1.20", frozenset({(443, "TCP"), (11434, "TCP")})
        ),
        Peer("cloud-metadata", None, (), "169.254.169.254", frozenset({(80, "TCP")})),
        Peer("shared-address-space", None, (), "100.64.0.5", frozenset({(443, "TCP")})),
    ]


def namespace_labels(docs: tuple[Manifest, ...], namespace: str | None) -> dict[str, str]:
    if namespace is None:
        return {}
    labels = {"kubernetes.io/metadata.name": namespace}
    for ns in of_kind(docs, "Namespace"):
        if ns["metadata"]["name"] == namespace:
            labels.update(ns["metadata"].get("labels", {}))
    return labels


def our_peers(docs: tuple[Manifest, ...]) -> list[Peer]:
    peers = []
    for workload in workloads(docs):
        template = workload["spec"]["template"]
        ports = frozenset(
            (int(port["containerPort"]), port.get("protocol", "TCP"))
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        )
        labels = template["metadata"]["labels"]
        peers.append(
            Peer(
                labels["app.kubernetes.io/name"],
                workload["metadata"].get("namespace", NAMESPACE),
                tuple(sorted(labels.items())),
                POD_IP,
                ports,
                ours=True,
            )
        )
    return peers


def selects(selector: Manifest | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        match expr["operator"]:
            case "In":
                ok = value in expr["values"]
            case "NotIn":
                ok = value not in expr["values"]
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
            case other:
                raise AssertionError(f"unknown selector operator {other}")
        if not ok:
            return False
    return True


def policy_types(policy: Manifest) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def peer_matches(rule_peer: Manifest, policy_ns: str, other: Peer, docs: tuple) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    if other.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], namespace_labels(docs, other.namespace)):
            return False
    elif other.namespace != policy_ns:
        return False
    if "podSelector" in rule_peer:
        return selects(rule_peer["podSelector"], other.label_map)
    return True


def port_matches(rule: Manifest, port: tuple[int, str]) -> bool:
    if not rule.get("ports"):
        return True
    number, protocol = port
    for allowed in rule["ports"]:
        if allowed.get("protocol", "TCP") != protocol:
            continue
        if "port" not in allowed:
            return True
        assert isinstance(allowed["port"], int), "named ports in policies are not modelled"
        if allowed["port"] <= number <= allowed.get("endPort", allowed["port"]):
            return True
    return False


def allows(
    docs: tuple, policies: list[Manifest], pod: Peer, direction: str, other: Peer, port: tuple
) -> bool:
    """Whether `pod` (one of ours) lets traffic go to / come from `other` on `port`."""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == pod.namespace
        and selects(p["spec"]["podSelector"], pod.label_map)
        and direction in policy_types(p)
    ]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", NAMESPACE)
        for rule in policy["spec"].get(key, []) or []:
            if not port_matches(rule, port):
                continue
            peers = rule.get(peers_key)
            if not peers or any(peer_matches(p, namespace, other, docs) for p in peers):
                return True
    return False


def edges(docs: tuple[Manifest, ...]) -> set[tuple[str, str, int, str]]:
    policies = of_kind(docs, "NetworkPolicy")
    ours = our_peers(docs)
    everyone = ours + outside_peers()
    found = set()
    for src in everyone:
        for dst in everyone:
            if not (src.ours or dst.ours):
                continue
            for port in dst.ports:
                out_ok = not src.ours or allows(docs, policies, src, "Egress", dst, port)
                in_ok = not dst.ours or allows(docs, policies, dst, "Ingress", src, port)
                if out_ok and in_ok:
                    found.add((src.name, dst.name, port[0], port[1]))
    return found


APPS = ("gateway", "memory-service", "chat-service", "qdrant", "redis")
EXPECTED = {
    ("gateway", "memory-service", 50051, "TCP"),
    ("gateway", "chat-service", 50052, "TCP"),
    ("chat-service", "memory-service", 50051, "TCP"),
    ("memory-service", "qdrant", 6333, "TCP"),
    # Qdrant cluster peers (consensus, shard transfer) once there is more than one replica.
    ("qdrant", "qdrant", 6335, "TCP"),
    ("gateway", "redis", 6379, "TCP"),
    # The LLM provider over HTTPS; private, shared and link-local ranges stay closed.
    ("chat-service", "internet", 443, "TCP"),
    # Supabase's JWKS, which the gateway verifies ES256/RS256 tokens against; same ranges.
    ("gateway", "internet", 443, "TCP"),
}
EXPECTED |= {(app, "kube-dns", 53, proto) for app in APPS for proto in ("UDP", "TCP")}
# The public API, from anywhere: an ingress controller, a load balancer, a private network.
EXPECTED |= {(peer.name, "gateway", 8080, "TCP") for peer in outside_peers()}

WITH_POLICIES = [o for o in OVERLAYS if of_kind(render(o), "NetworkPolicy")]


def test_every_overlay_includes_the_network_policies() -> None:
    assert WITH_POLICIES == OVERLAYS


@pytest.mark.parametrize("overlay", WITH_POLICIES)
def test_policies_allow_exactly_the_service_edges(overlay: str) -> None:
    docs = render(overlay)
    assert {peer.name for peer in our_peers(docs)} == set(APPS)
    found = edges(docs)
    assert sorted(found - EXPECTED) == [], "allowed but not expected"
    assert sorted(EXPECTED - found) == [], "expected but not allowed"


@pytest.mark.parametrize("overlay", WITH_POLICIES)
def test_every_pod_is_isolated_both_ways(overlay: str) -> None:
    """A pod no policy selects would be open; the default deny must cover every pod."""
    docs = render(overlay)
    policies = of_kind(docs, "NetworkPolicy")
    for pod in our_peers(docs):
        for direction in ("Ingress", "Egress"):
            assert any(
                selects(p["spec"]["podSelector"], pod.label_map) and direction in policy_types(p)
                for p in policies
            ), f"{pod.name} is not isolated for {direction}"


def test_the_edge_model_sees_an_added_path() -> None:
    """The model is not blind: opening one more path shows up as one more edge."""
    docs = render(WITH_POLICIES[0])
    extra: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "extra", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
    }
    added = edges((*docs, extra)) - edges(docs)
    assert ("redis", "internet", 443, "TCP") in added
    assert ("redis", "cloud-metadata", 80, "TCP") in added
    # Egress alone does not open a path whose far side denies ingress.
    assert ("redis", "gateway", 8080, "TCP") in added
    assert ("redis", "qdrant", 6333, "TCP") not in added
