"""Tailscale for agents: MagicDNS names, the sidecar, its serve configuration and RBAC.

Pure builders: nothing here talks to the apiserver or to a control server.
"""
