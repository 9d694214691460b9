"""kopf handlers: thin adapters that read a resource, call the logic, and patch status.

Importing a module registers its handlers with kopf's default registry.
"""
