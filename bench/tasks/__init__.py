"""The scenarios of bench/tasks_bench.py, one a module: `baseline` (the apiserver alone),
`cr_path` (burst, paced, profiled) and `pending` (memory per pending task). What they
share: `apiserver` (reaching it, the objects written), `processes` (operator, agents),
`clients` (watcher, creator, request sender), `runs` (one run and its figures),
`memory`, `pyspy`, `report`; `operator_shim.py` runs the operator with tracing or the
trust_env experiment."""
