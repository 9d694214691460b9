"""The cluster addresses the egress policy refuses by default: where the API server is,
and the Service ranges (docs/security.md, "Outbound requests")."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from yarl import URL

logger = logging.getLogger("agent_mesh.egress")


async def apiserver_addresses(api: client.ApiClient) -> list[tuple[str, int]]:
    """(address, port) of the API server as this operator reaches it (its client's host,
    resolved), and in a pod the `kubernetes` Service (KUBERNETES_SERVICE_HOST/PORT)."""
    found: list[tuple[str, int]] = []
    url = URL(str(api.configuration.host))
    if url.host and url.port:
        found += await _resolved(url.host, url.port)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host and port.isdigit():
        found += await _resolved(host, int(port))
    return sorted(set(found))


async def _resolved(host: str, port: int) -> list[tuple[str, int]]:
    try:
        return [(str(ipaddress.ip_address(host.strip("[]"))), port)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        logger.warning("cannot resolve the API server's host %s: %s", host, error)
        return []
    return [(str(info[4][0]).split("%", 1)[0], port) for info in infos]


async def service_cidrs(api: client.ApiClient) -> list[str]:
    """The ranges of the cluster's ServiceCIDR objects (networking.k8s.io/v1); empty, and
    logged, when they cannot be listed (older cluster, or no RBAC for it)."""
    try:
        listed = await client.NetworkingV1Api(api).list_service_cidr()
    except (ApiException, aiohttp.ClientError, OSError) as error:
        logger.info(
            "ServiceCIDRs not readable (%s): the Service range is only what "
            "AGENT_MESH_EGRESS_SERVICE_CIDRS says",
            f"{error.status} {error.reason}" if isinstance(error, ApiException) else error,
        )
        return []
    return [cidr for item in listed.items for cidr in (item.spec.cidrs or [])]
