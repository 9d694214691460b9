"""TLS on the mesh API with the operator as the one certificate owner, against the real
apiserver: SDK agents verify the mesh API with the published CA bundle, a client trusting
anything else is refused, the CA lives in one Secret that restarts and racing operators
share, the serving certificate names what the configuration lists, the bundle reaches agent
namespaces with few writes, a cert-manager Secret is served as is, and the apiserver still
calls the webhook."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.domain.errors import UnavailableError, ValidationError
from agent_mesh.kube.ca_bundle import CaBundlePublisher
from agent_mesh.kube.ca_secret import CertManagerSecret, SecretCaStore
from agent_mesh.pki import CA_BUNDLE_CONFIGMAP, CA_BUNDLE_KEY, CA_SECRET
from agent_mesh.pki.authority import serving_names
from agent_mesh.pki.certs import KeyPair, issue, make_ca
from agent_mesh.pki.owner import CertificateOwner
from agent_mesh.sdk import TokenSource
from agent_mesh.testing import OperatorProcess, manifest
from tests.support.agents import launch, register
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent, external_agent
from tests.support.namespaces import family, namespace_fixture
from tests.support.operators import own_operator
from tests.support.tasks import agent_status
from tests.support.waiting import wait_for

# Operators of this file's own watch their own namespace family, apart from the session's.
TLS_FAMILY = family("amc")

system_namespace = namespace_fixture(f"{TLS_FAMILY}sys-")
"""A fresh operator namespace: no CA Secret in it yet."""


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[aclient.ApiClient]:
    """The async client the operator's own adapters use."""
    api = await aconfig.new_client_from_config(
        config_file=str(cluster.kubeconfig), persist_config=False
    )
    yield api
    await api.close()


def _served_certificate(port: int, trust: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _ca_secret(cluster: Cluster, namespace: str) -> client.V1Secret:
    return client.CoreV1Api(cluster.api).read_namespaced_secret(CA_SECRET, namespace)


# --- the SDK and the mesh API ---------------------------------------------------------


@pytest.mark.smoke
def test_sdk_agent_exchanges_its_token_and_beats_over_verified_https(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    assert operator.mesh_url.startswith("https://") and operator.ca_file is not None
    url, credential = register(cluster, namespace, "tls-echo", "worker", ["echo"])
    agent = launch("echo_worker.py", operator, namespace, "tls-echo", url, credential, tmp_path)
    try:
        agent.wait_ready()  # ready: token exchanged, keys and policies pulled over https

        def healthy() -> bool:
            status = agent_status(cluster, namespace, "tls-echo")
            return status.get("healthStatus") == "healthy"

        wait_for("the agent's heartbeat over https to make it healthy", healthy)
        assert "certificate" not in agent.logs().lower()
    finally:
        agent.stop()


async def test_client_trusting_another_ca_is_refused_with_a_certificate_error(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    credential = external_agent(cluster, namespace, "doubter", "worker")
    stranger, _ = make_ca("not-the-mesh-ca")
    (tmp_path / "stranger.crt").write_bytes(stranger.cert_pem)
    for ca_file in (tmp_path / "stranger.crt", None):  # another CA; the system's store
        source = TokenSource(
            operator.mesh_url,
            namespace=namespace,
            agent_id="doubter",
            credential=credential,
            ca_file=ca_file,
        )
        with pytest.raises(UnavailableError) as caught:
            await source.token()
        assert caught.value.code == "MeshCertificateInvalid"
        assert caught.value.field == "AGENT_MESH_CA_FILE"
        assert "certificate verify failed" in caught.value.message
        assert source.identity is None  # nothing was sent that got an answer


# --- the CA and the serving certificate ------------------------------------------------


def test_serving_certificate_names_the_service_and_the_configured_addresses(
    cluster: Cluster, crds: object, system_namespace: str, tmp_path: Path
) -> None:
    names = {
        "AGENT_MESH_SERVICE_NAME": "mesh-api",
        "AGENT_MESH_TLS_EXTRA_SANS": "mesh.example.test,10.0.0.7,*.tail1234.ts.net",
    }
    log = tmp_path / "operator.log"
    with own_operator(
        cluster, log, TLS_FAMILY, system=system_namespace, extra_env=names
    ) as operator:
        served = _served_certificate(operator.mesh_port, operator.tls)
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        "mesh-api",
        f"mesh-api.{system_namespace}",
        f"mesh-api.{system_namespace}.svc",
        f"mesh-api.{system_namespace}.svc.cluster.local",
        "mesh.example.test",
        "*.tail1234.ts.net",
    ]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
        "10.0.0.7",
    ]
    ca = x509.load_pem_x509_certificate(operator.ca_file.read_bytes())  # type: ignore[union-attr]
    served.verify_directly_issued_by(ca)


async def test_two_operators_starting_at_once_share_one_ca(
    kube: aclient.ApiClient, namespace: str
) -> None:
    stores = [SecretCaStore(kube, namespace), SecretCaStore(kube, namespace)]
    made = [make_ca("racer-a")[0], make_ca("racer-b")[0]]
    loaded = await asyncio.gather(
        stores[0].load_or_create(lambda: made[0]), stores[1].load_or_create(lambda: made[1])
    )
    assert loaded[0] == loaded[1] and loaded[0] in made
    assert sorted(store.created for store in stores) == [False, True]


async def test_an_empty_ca_secret_prepared_for_the_operator_is_filled_not_replaced(
    cluster: Cluster, kube: aclient.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": CA_SECRET, "labels": {"team": "platform"}}}
    )
    before = core.read_namespaced_secret(CA_SECRET, namespace).metadata.uid
    pair = await SecretCaStore(kube, namespace).load_or_create(lambda: make_ca("filled")[0])
    after = core.read_namespaced_secret(CA_SECRET, namespace)
    assert after.metadata.uid == before
    assert after.metadata.labels["team"] == "platform"
    assert base64.b64decode(after.data["ca.key"]) == pair.key_pem


async def test_a_ca_secret_missing_its_key_is_refused_naming_what_is_missing(
    cluster: Cluster, kube: aclient.ApiClient, namespace: str
) -> None:
    ca, _ = make_ca("half")
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": CA_SECRET},
            "data": {"ca.crt": base64.b64encode(ca.cert_pem).decode()},
        },
    )
    with pytest.raises(ValidationError) as caught:
        await SecretCaStore(kube, namespace).load_or_create(lambda: make_ca("unused")[0])
    assert caught.value.code == "CaSecretInvalid"
    assert "has ca.crt but not both ca.crt and ca.key" in caught.value.message


# --- cert-manager -----------------------------------------------------------------------


def _tls_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, bytes]) -> None:
    body = {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    core = client.CoreV1Api(cluster.api)
    try:
        core.create_namespaced_secret(namespace, body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


async def test_a_cert_manager_secret_is_served_and_its_renewal_picked_up(
    cluster: Cluster, kube: aclient.ApiClient, namespace: str
) -> None:
    def certificate() -> tuple[KeyPair, bytes]:
        """A new CA and leaf, written to Secret mesh-tls as cert-manager writes them."""
        ca, ca_key = make_ca("cert-manager-ca")
        leaf = issue(ca, ca_key, "agent-mesh", dns_names=("localhost",), server=True)
        data = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem}
        _tls_secret(cluster, namespace, "mesh-tls", data)
        return leaf, ca.cert_pem

    leaf, bundle = certificate()
    owner = CertificateOwner(
        serving_names(["127.0.0.1"], service="agent-mesh", namespace=namespace),
        clock=lambda: dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(days=1),
        issued=CertManagerSecret(kube, namespace, "mesh-tls"),
    )
    assert await owner.check()
    assert owner.serving.pair == leaf and owner.bundle == bundle

    renewed, new_bundle = certificate()
    assert await owner.check()
    assert owner.serving.pair == renewed and owner.bundle == new_bundle


async def test_a_cert_manager_secret_that_is_missing_or_incomplete_is_named(
    cluster: Cluster, kube: aclient.ApiClient, namespace: str
) -> None:
    with pytest.raises(ValidationError) as missing:
        await CertManagerSecret(kube, namespace, "nowhere").read()
    assert missing.value.code == "TlsSecretMissing"
    assert "AGENT_MESH_TLS_SECRET" in missing.value.message

    leaf, _ = make_ca("only-a-cert")
    _tls_secret(cluster, namespace, "partial", {"tls.crt": leaf.cert_pem})
    with pytest.raises(ValidationError) as partial:
        await CertManagerSecret(kube, namespace, "partial").read()
    assert partial.value.code == "TlsSecretInvalid"
    assert f"{namespace}/partial" in partial.value.message
    assert "lacks tls.key, ca.crt" in partial.value.message


# --- the CA bundle ConfigMap ------------------------------------------------------------


def _bundle_configmap(cluster: Cluster, namespace: str) -> client.V1ConfigMap | None:
    try:
        return client.CoreV1Api(cluster.api).read_namespaced_config_map(
            CA_BUNDLE_CONFIGMAP, namespace
        )
    except client.ApiException:
        return None


def test_ca_bundle_configmap_appears_in_an_agent_namespace_and_is_written_once(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    assert _bundle_configmap(cluster, namespace) is None
    apply_agent(cluster, namespace, "first", "worker")
    published = wait_for(
        "the CA bundle ConfigMap in the agent's namespace",
        lambda: _bundle_configmap(cluster, namespace),
    )
    assert operator.ca_file is not None
    assert published.data == {CA_BUNDLE_KEY: operator.ca_file.read_text()}
    assert published.metadata.labels["app.kubernetes.io/managed-by"] == "agent-mesh"

    apply_agent(cluster, namespace, "second", "worker")
    wait_for(
        "the second agent to register",
        lambda: agent_status(cluster, namespace, "second").get("registeredAt"),
    )
    again = _bundle_configmap(cluster, namespace)
    assert again is not None
    assert again.metadata.resource_version == published.metadata.resource_version


async def test_the_bundle_publisher_writes_only_what_changed_and_repairs_edits(
    cluster: Cluster, kube: aclient.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api)
    publisher = CaBundlePublisher(kube)
    publisher.notice(namespace)
    await publisher.set_bundle(b"bundle one")
    await publisher.publish_pending()
    assert _bundle_configmap(cluster, namespace).data == {CA_BUNDLE_KEY: "bundle one"}  # type: ignore[union-attr]
    await publisher.publish_pending()
    await publisher.verify()  # reads, finds it current: no write
    assert publisher.writes == 1

    core.patch_namespaced_config_map(
        CA_BUNDLE_CONFIGMAP, namespace, {"data": {CA_BUNDLE_KEY: "tampered"}}
    )
    await publisher.verify()
    assert _bundle_configmap(cluster, namespace).data == {CA_BUNDLE_KEY: "bundle one"}  # type: ignore[union-attr]
    core.delete_namespaced_config_map(CA_BUNDLE_CONFIGMAP, namespace)
    await publisher.verify()
    assert _bundle_configmap(cluster, namespace) is not None
    await publisher.set_bundle(b"bundle two")  # e.g. cert-manager rotated its CA
    await publisher.publish_pending()
    assert _bundle_configmap(cluster, namespace).data == {CA_BUNDLE_KEY: "bundle two"}  # type: ignore[union-attr]
    assert publisher.writes == 4


# --- the webhook ------------------------------------------------------------------------


def test_the_apiserver_calls_the_webhook_trusting_the_operator_ca(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    assert operator.ca_file is not None
    bundle = operator.ca_file.read_bytes()

    def registered_with_our_ca() -> bool:
        config = client.AdmissionregistrationV1Api(
            cluster.api
        ).read_validating_webhook_configuration("agentmesh.io")
        return bool(config.webhooks) and all(
            base64.b64decode(hook.client_config.ca_bundle) == bundle for hook in config.webhooks
        )

    wait_for("the webhook's caBundle to be the operator's CA", registered_with_our_ca)
    task = manifest(
        "MeshTask", "too-big", {"taskType": "echo", "payload": {"text": "x" * (300 * 1024)}}
    )
    with pytest.raises(client.ApiException) as refused:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshtasks", task)
    assert "spec.payload" in refused.value.body  # the webhook's own message: it was called
