"""The wrapper go.mod and version stamps that make k8s.io/kubernetes buildable as a module."""

from __future__ import annotations

import pytest

from agent_mesh.devcluster.binaries import kube_ldflags, wrapper_go_mod
from agent_mesh.devcluster.versions import staging_version

UPSTREAM = """\
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiextensions-apiserver => ./staging/src/k8s.io/apiextensions-apiserver
\tk8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
)
"""


def test_every_staging_module_is_pinned_to_its_published_tag() -> None:
    go_mod = wrapper_go_mod(UPSTREAM, "1.36.3")
    for module in ("api", "apiextensions-apiserver", "cri-streaming", "streaming"):
        assert f"\tk8s.io/{module} => k8s.io/{module} v0.36.3\n" in go_mod
    assert "./staging" not in go_mod


def test_go_directive_and_godebug_are_copied() -> None:
    go_mod = wrapper_go_mod(UPSTREAM, "1.36.3")
    assert "\ngo 1.26.0\n" in go_mod
    assert "\ngodebug default=go1.26\n" in go_mod


def test_a_go_mod_without_staging_replaces_is_refused() -> None:
    from agent_mesh.devcluster import BuildError

    with pytest.raises(BuildError, match="no staging replaces"):
        wrapper_go_mod("module k8s.io/kubernetes\n", "1.36.3")


def test_staging_tags_follow_the_kubernetes_minor() -> None:
    assert staging_version("1.36.3") == "v0.36.3"
    assert staging_version("1.34.0") == "v0.34.0"
    with pytest.raises(ValueError, match="major"):
        staging_version("2.0.0")


def test_version_stamps_reach_server_and_client() -> None:
    flags = kube_ldflags("1.36.3")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.36.3" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=36" in flags
    assert flags.startswith("-s -w")
