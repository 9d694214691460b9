"""The agent SDK: what an agent imports to join the mesh.

from agent_mesh.sdk import Agent, MeshClient
"""

from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.domain.message import Message
from agent_mesh.sdk.agent import Agent, StreamContext, TaskContext
from agent_mesh.sdk.client import AgentInfo, MeshClient
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.tasks import TaskAnswer, TaskSpec

__all__ = [
    "Agent",
    "AgentInfo",
    "MeshClaims",
    "MeshClient",
    "Message",
    "StreamContext",
    "TaskAnswer",
    "TaskContext",
    "TaskSpec",
    "TokenSource",
]
