"""Declarative durable workflows and tool-using agents: YAML specs checked at apply time,
run step by step through the gateway, each completed step checkpointed in the store."""
