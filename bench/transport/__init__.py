"""The scenarios of bench/transport_bench.py, one a module: `request_response`,
`step_costs`, `one_loop`, `broadcast`, `connections`, `profile_diff`; `parts` holds what
they share (the Agent and raw-server processes, the two callers). Each scenario has a
`run(...)` that returns its figures and a `report(figures)` that prints them."""
