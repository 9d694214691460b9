"""The kubelet is authenticated and authorised as in real clusters: no anonymous access,
a serving certificate the cluster CA signed for the harness's address."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.node.conftest import NodeCluster

KUBELET = "https://10.244.0.1:10250"  # the harness's address on the node's bridge


def test_kubelet_refuses_an_anonymous_caller_and_serves_a_certificate_of_the_cluster_ca(
    node_cluster: NodeCluster,
) -> None:
    ca = Path(node_cluster.kubeconfig).parent / "pki" / "ca.crt"
    verified = ssl.create_default_context(cafile=str(ca))  # verifies name and issuer
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{KUBELET}/pods", timeout=10, context=verified)
    assert refused.value.code == 401  # anonymous authentication is off

    admin = ssl.create_default_context(cafile=str(ca))
    pki = ca.parent
    admin.load_cert_chain(
        pki / "apiserver-kubelet-client.crt", pki / "apiserver-kubelet-client.key"
    )
    with urllib.request.urlopen(f"{KUBELET}/pods", timeout=10, context=admin) as answer:
        assert answer.status == 200  # the apiserver's own client certificate, authorised
