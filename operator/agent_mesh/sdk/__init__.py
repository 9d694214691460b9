"""The agent SDK: what an agent imports to join the mesh (identity, heartbeats; the Agent
class and MeshClient follow)."""
