"""TLS settings of the operator: on by default, names from the environment, and bad values
refused with the field named."""

from __future__ import annotations

import pydantic
import pytest

from agent_mesh.cli import _parser
from agent_mesh.config import OperatorConfig


def test_the_mesh_api_serves_tls_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig().mesh_tls is True
    assert _parser().parse_args(["operator"]).mesh_tls is None  # not given: config decides
    assert _parser().parse_args(["operator", "--no-mesh-tls"]).mesh_tls is False
    monkeypatch.setenv("AGENT_MESH_MESH_TLS", "false")
    assert OperatorConfig().mesh_tls is False


def test_extra_names_from_the_environment_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_MESH_TLS_EXTRA_SANS", "mesh.example.com, 10.0.0.7,*.tail1234.ts.net,")
    assert OperatorConfig().tls_extra_sans == ["mesh.example.com", "10.0.0.7", "*.tail1234.ts.net"]


@pytest.mark.parametrize("bad", ["bad_name", "http://mesh", "mesh..example", "-mesh", "Mesh "])
def test_an_extra_name_that_is_neither_a_dns_name_nor_an_address_is_refused(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        OperatorConfig(tls_extra_sans=["ok.example.com", bad])
    error = caught.value.errors()[0]
    assert error["loc"] == ("tls_extra_sans",)
    assert f"{bad!r} is neither an IP address nor a DNS name" in error["msg"]


def test_a_tls_secret_name_must_be_a_secret_name() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        OperatorConfig(tls_secret="Not/A/Name")
    assert caught.value.errors()[0]["loc"] == ("tls_secret",)
