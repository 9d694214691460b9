"""The node's Kubernetes components: their certificates, kubeconfigs, configs and flags.

Each component has a client certificate of its own, named the way the apiserver's default
RBAC (and the Node authorizer) expects: system:kube-controller-manager,
system:kube-scheduler, system:kube-proxy, system:node:<node> in system:nodes. The kubelet
serves with a certificate the cluster CA signs for the harness's address, requires client
certificates (the apiserver's) and asks the apiserver to authorise each call (Webhook).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agent_mesh.devcluster import network
from agent_mesh.devcluster.cluster import CLUSTER_DOMAIN, write_kubeconfig
from agent_mesh.pki import certs

NODE_NAME = "agent-mesh-node"
COREDNS_USER = "agent-mesh:coredns"
# For a node on a developer's disk: evict only when little is really left (absolute
# figures, not the default 10-15 % of a large disk), and never garbage-collect images —
# there is no registry to pull them back from.
EVICTION_HARD = {
    "memory.available": "100Mi",
    "nodefs.available": "512Mi",
    "nodefs.inodesFree": "5%",
    "imagefs.available": "512Mi",
}


@dataclass(frozen=True)
class Identity:
    """A client identity of a component: its certificate's CN and organisation."""

    name: str
    user: str
    group: str | None = None


IDENTITIES = (
    Identity("kube-controller-manager", "system:kube-controller-manager"),
    Identity("kube-scheduler", "system:kube-scheduler"),
    Identity("kube-proxy", "system:kube-proxy"),
    Identity("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
    Identity("coredns", COREDNS_USER),
)


class ClusterCA:
    """The control plane's CA, loaded to sign the node's certificates."""

    def __init__(self, pki_dir: Path) -> None:
        self.cert_file = pki_dir / "ca.crt"
        self.pair = certs.KeyPair(self.cert_file.read_bytes(), (pki_dir / "ca.key").read_bytes())
        key = load_pem_private_key(self.pair.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key

    def write(self, directory: Path, name: str, pair: certs.KeyPair) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(pair.cert_pem)
        certs.write_private(key, pair.key_pem)
        return cert, key


def write_credentials(ca: ClusterCA, directory: Path, server: str) -> dict[str, Path]:
    """A kubeconfig per component, and the kubelet's serving certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfigs = {}
    for identity in IDENTITIES:
        pair = certs.issue(ca.pair, ca.key, identity.user, organization=identity.group, client=True)
        cert, key = ca.write(directory, identity.name, pair)
        path = directory / f"{identity.name}.kubeconfig"
        write_kubeconfig(path, server, ca.cert_file, identity.user, cert, key)
        kubeconfigs[identity.name] = path
    serving = certs.issue(
        ca.pair,
        ca.key,
        NODE_NAME,
        dns_names=(NODE_NAME,),
        ip_addresses=(network.HOST_ADDRESS,),
        server=True,
    )
    ca.write(directory, "kubelet-serving", serving)
    return kubeconfigs


def kubelet_config(
    *, pki: Path, runtime_socket: Path, pod_logs: Path, healthz_port: int, ca_file: Path
) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.HOST_ADDRESS,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "imageServiceEndpoint": f"unix://{runtime_socket}",
        # cgroup v1 machines: refused by default since 1.35; no systemd here.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "clusterDNS": [network.DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # pods never see the host's resolvers
        "podLogsDir": str(pod_logs),
        "evictionHard": EVICTION_HARD,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "makeIPTablesUtilChains": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "2s",
        "containerLogMaxSize": "5Mi",
        "containerLogMaxFiles": 2,
        "shutdownGracePeriod": "0s",
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubelet_args(*, config: Path, kubeconfig: Path, root_dir: Path, cert_dir: Path) -> list[str]:
    return [
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={network.HOST_ADDRESS}",
        f"--root-dir={root_dir}",
        f"--cert-dir={cert_dir}",
        "--v=1",
    ]


def controller_manager_args(kubeconfig: Path, pki_dir: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--secure-port=0",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki_dir / 'sa.key'}",
        f"--root-ca-file={pki_dir / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}",
        f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
        f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        "--allocate-node-cidrs=false",
        "--controllers=*,-bootstrapsigner,-tokencleaner",
        "--concurrent-gc-syncs=5",
        "--profiling=false",
    ]


def scheduler_args(kubeconfig: Path) -> list[str]:
    return [f"--kubeconfig={kubeconfig}", "--secure-port=0", "--leader-elect=false"]


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": network.POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts answer on the harness's address only, never on the uplink.
        "nodePortAddresses": [f"{network.HOST_ADDRESS}/32"],
        # Zero: kube-proxy leaves the conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(kubeconfig: Path, ready_port: int, health_port: int) -> str:
    """Cluster names only: no `forward` plugin, so an outside name fails here, locally."""
    return f""".:53 {{
    bind {network.HOST_ADDRESS}
    ready 127.0.0.1:{ready_port}
    health 127.0.0.1:{health_port}
    errors
    cache 30
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 30
    }}
}}
"""


def cni_config(ipam_dir: Path) -> str:
    """The pods' network: the harness's bridge, no masquerade, no default route."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "agent-mesh",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": network.BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": network.POD_CIDR, "gateway": network.HOST_ADDRESS}]],
                        "routes": [{"dst": network.SERVICE_CIDR}],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=2,
    )


def bootstrap_objects() -> str:
    """RBAC for the apiserver → kubelet and CoreDNS identities, and the kube-dns Service
    whose endpoint is CoreDNS on the harness's address."""
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "agent-mesh:kube-apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-apiserver-kubelet-client",
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "agent-mesh:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "agent-mesh:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "agent-mesh:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "clusterIP": network.DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-host",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "agent-mesh.devcluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [network.HOST_ADDRESS], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    ]
    return yaml.safe_dump_all(objects, sort_keys=False)
