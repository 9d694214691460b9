"""What every benchmark here shares, so that each bench script is a thin scenario:

- `stats`: the one percentile definition (linear interpolation between closest ranks)
- `procfs`: CPU seconds, RSS and open files of a process, the machine's busy time
- `children`: child processes (spawned or exec'd) that are stopped by pid and die with
  the bench
- `harness`: the loopback pieces: ports, waiting for an endpoint, serving an aiohttp app,
  token exchange, echo_worker agent processes
- `meshserver`: the operator's mesh API on in-memory state (imported only where served:
  an agent process of a bench must not load it)
- `load`: sequential and closed-loop load on an async call
- `output`: tables on stdout and the JSON result under bench/results/
- `cli`: the argument conventions (`--quick`, size flags) and the main() wrapper
- `profiling`: cProfile a block, list the top functions

A script in bench/ imports it as `common` (`python bench/x.py` puts bench/ first on
sys.path); modules here import each other relatively, so tests can import `bench.common`.
"""
