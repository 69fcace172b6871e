"""The agent's life: start-up (signals first), then the loops that agent.py wires."""
