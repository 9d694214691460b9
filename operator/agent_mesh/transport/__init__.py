"""Agent-to-agent and operator-to-agent HTTP: pooled keep-alive connections per target,
request/response with correlation, broadcast with per-target outcomes, retries only where
a retry is safe. Runs on aiohttp's client (measured: bench/transport_engines.py)."""
