"""The operator's mesh API: the HTTP server agents call (tokens, heartbeats, and later
discovery and tasks). Every route but the probes, JWKS and the token exchange needs a
verified mesh token."""
