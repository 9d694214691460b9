"""Bad input to `agent-mesh` is one clear line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent_mesh.cli import EXIT_FAILURE, EXIT_USAGE, main


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No state, KUBECONFIG or kubernetes-client default leaks into or out of these tests
    (the CLI loads kubeconfigs into the client library's process-wide default)."""
    from kubernetes import client

    monkeypatch.setenv("AGENT_MESH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AGENT_MESH_NODE_DIR", str(tmp_path / "node"))  # not the machine's
    kubeconfig = os.environ.pop("KUBECONFIG", None)
    default = client.Configuration.get_default_copy()
    yield
    client.Configuration.set_default(default)
    os.environ.pop("KUBECONFIG", None)  # the CLI exports the kubeconfig it loaded
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = kubeconfig


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {}}],
            }
        )
    )
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What `agent-mesh <argv>` writes to stderr; it must exit with EXIT_USAGE."""
    assert main(list(argv)) == EXIT_USAGE
    return capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == EXIT_USAGE
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_missing_kubeconfig_names_the_flag_and_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    err = usage_error(capsys, "operator", "--kubeconfig", str(missing))
    assert err.startswith("agent-mesh: error: ")
    assert f"--kubeconfig={missing}: cannot read it: No such file or directory" in err


def test_garbage_in_KUBECONFIG_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("just: [a, list")
    monkeypatch.setenv("KUBECONFIG", str(bad))
    assert f"KUBECONFIG={bad}: not valid YAML" in usage_error(capsys, "operator")


def test_a_yaml_file_that_is_not_a_kubeconfig_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "values.yaml"
    other.write_text("replicas: 3\n")
    assert "not a kubeconfig (no `clusters` list)" in usage_error(
        capsys, "operator", "--kubeconfig", str(other)
    )


def test_operator_refuses_a_port_in_use(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, busy_port: int
) -> None:
    assert f"--liveness-port: port {busy_port} on 127.0.0.1 is already in use" in usage_error(
        capsys, "operator", "--kubeconfig", str(kubeconfig), "--liveness-port", str(busy_port)
    )


def test_operator_refuses_an_out_of_range_port(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path
) -> None:
    assert "--webhook-port: Input should be less than or equal to 65535 (got 70000)" in usage_error(
        capsys, "operator", "--kubeconfig", str(kubeconfig), "--webhook-port", "70000"
    )


def test_a_bad_setting_from_the_environment_is_named_by_its_variable(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_MESH_TLS_EXTRA_SANS", "Bad_Name")  # a setting without a flag
    err = usage_error(capsys, "operator", "--kubeconfig", str(kubeconfig))
    assert "error: AGENT_MESH_TLS_EXTRA_SANS: Value error, 'Bad_Name' is neither" in err
    assert "--tls-extra-sans" not in err


def test_a_webhook_configuration_name_without_a_dot_is_refused_naming_its_variable(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_MESH_WEBHOOK_CONFIGURATION", "agentmesh")
    err = usage_error(capsys, "operator", "--kubeconfig", str(kubeconfig))
    assert "error: AGENT_MESH_WEBHOOK_CONFIGURATION: String should match pattern" in err


def test_a_bad_setting_is_named_by_its_flag_when_the_flag_gave_it(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_MESH_WEBHOOK_PORT", "70001")  # the flag wins over it
    err = usage_error(
        capsys, "operator", "--kubeconfig", str(kubeconfig), "--webhook-port", "70000"
    )
    assert "error: --webhook-port: Input should be less than or equal to 65535 (got 70000)" in err

    err = usage_error(capsys, "operator", "--kubeconfig", str(kubeconfig))
    assert "error: AGENT_MESH_WEBHOOK_PORT: Input should be less than or equal to 65535" in err


def test_an_environment_list_that_is_not_json_is_named_with_the_form_it_needs(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_MESH_NAMESPACES", "team-a")
    err = usage_error(capsys, "operator", "--kubeconfig", str(kubeconfig))
    assert "error: AGENT_MESH_NAMESPACES: not JSON" in err and '["a", "b"]' in err


def test_a_port_in_use_from_the_environment_is_named_by_its_variable(
    capsys: pytest.CaptureFixture[str],
    kubeconfig: Path,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent_mesh.devcluster.ports import free_port

    monkeypatch.setenv("AGENT_MESH_MESH_PORT", str(busy_port))
    liveness = str(free_port())  # checked first: a free one
    assert f"AGENT_MESH_MESH_PORT: port {busy_port} on 127.0.0.1 is already in use" in usage_error(
        capsys,
        "operator",
        "--kubeconfig",
        str(kubeconfig),
        "--no-webhooks",
        "--liveness-port",
        liveness,
    )


def test_dev_up_refuses_a_port_in_use_before_building(
    capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    assert f"--port: port {busy_port} on 127.0.0.1 is already in use" in usage_error(
        capsys, "dev", "up", "--port", str(busy_port)
    )


def test_dev_up_refuses_a_malformed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--kubernetes-version 'latest': expected 1.MINOR.PATCH" in usage_error(
        capsys, "dev", "up", "--kubernetes-version", "latest"
    )


def test_dev_kubeconfig_without_a_running_plane_says_how_to_start_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dev", "kubeconfig"]) == EXIT_FAILURE
    assert "no local control plane is running; start one with `agent-mesh dev up`" in (
        capsys.readouterr().err
    )


def test_dev_down_without_a_plane_is_harmless(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "down"]) == 0
    assert "no local control plane is running" in capsys.readouterr().err


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent_mesh", "operator", "--kubeconfig", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr
    assert "cannot read it" in proc.stderr
