"""The chart's values table in docs/helm.md is generated from values.schema.json and
values.yaml: it must match them, and a doc without the markers is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_mesh.devcluster import values_doc

ROOT = Path(__file__).resolve().parents[2]


def test_docs_helm_values_table_matches_the_chart() -> None:
    doc = (ROOT / "docs" / "helm.md").read_text()
    fresh = values_doc.with_table(doc, values_doc.chart_table(ROOT / "charts" / "agent-mesh"), "")
    assert doc == fresh, "docs/helm.md's values table is stale: run `make manifests`"


def test_every_leaf_value_with_its_type_range_and_default() -> None:
    schema = {
        "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1, "description": "a|b"},
            "mode": {"type": "string", "enum": ["x", "y"]},
            "ports": {"type": "object", "properties": {"mesh": {"type": "integer"}}},
            "extra": {"type": "object"},
        }
    }
    table = values_doc.values_table(
        schema, {"replicas": 1, "mode": "x", "ports": {"mesh": 8090}, "extra": {"k": "v" * 50}}
    )
    assert table.splitlines()[2:] == [
        "| `replicas` | integer 0..1 | `1` | a\\|b |",
        '| `mode` | `x` \\| `y` | `"x"` |  |',
        "| `ports.mesh` | integer | `8090` |  |",
        "| `extra` | object | see values.yaml |  |",
    ]


def test_a_doc_without_the_markers_is_refused_naming_it() -> None:
    with pytest.raises(values_doc.ValuesDocError, match=r"docs/x\.md: needs the markers"):
        values_doc.with_table("# no table here\n", "| t |\n", "docs/x.md")


def test_manifests_write_refuses_a_values_doc_it_cannot_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_mesh import cli

    chart = str(ROOT / "charts" / "agent-mesh")
    missing = tmp_path / "missing.md"
    assert cli.main(["manifests", "--write", "--chart", chart, "--values-doc", str(missing)]) == 2
    assert f"--values-doc {missing}: no such file" in capsys.readouterr().err
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("# values\n")
    assert cli.main(["manifests", "--write", "--chart", chart, "--values-doc", str(unmarked)]) == 2
    assert "needs the markers" in capsys.readouterr().err
    assert unmarked.read_text() == "# values\n"


def test_write_fills_the_marked_section_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = tmp_path / "helm.md"
    doc.write_text(f"# Values\nbefore\n{values_doc.BEGIN}\nold\n{values_doc.END}\nafter\n")
    assert values_doc.write(ROOT / "charts" / "agent-mesh", doc)
    text = doc.read_text()
    assert text.startswith("# Values\nbefore\n") and text.endswith(f"{values_doc.END}\nafter\n")
    assert "| `replicas` | integer 0..1 | `1` |" in text and "\nold\n" not in text
    assert not values_doc.write(ROOT / "charts" / "agent-mesh", doc)  # unchanged: no write
