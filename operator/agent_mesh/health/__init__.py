"""Agent health in the operator: heartbeat tracking with its status writes and Events
(`monitor`), and `agent.health` transitions sent to the monitor agents (`broadcast`)."""
