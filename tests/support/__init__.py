"""The tests' scaffolding, once: the cluster and its namespaces, operators of a test's own,
agent fleets, the mesh API as an external agent sees it, MeshTasks, the admission webhook
in-process, the in-memory mesh, stand-in servers, egress seams, routing records, a
hand-moved clock, fresh virtualenvs, the local tailnet; and the run's reporting (a pytest
plugin). Built on the product-side harness, agent_mesh.testing; the fixtures that use these live
in the conftest files (docs/testing.md)."""
