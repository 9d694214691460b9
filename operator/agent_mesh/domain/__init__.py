"""The pure core: no Kubernetes, kopf or HTTP imports (checked by import-linter)."""
