"""The running operator: its long-lived services wired together (`services`), kopf's
settings and start-up (`manager`), a fix to kopf's namespace observation
(`namespace_observation`), and plug-in strategies found among the installed
packages (`plugins`). The only layer that knows every other one; nothing imports it but
the CLI."""
