"""Layer 1, the plan core: sheet + defaults -> merged, validated, sharded runs, and the plan directory.

May import: ``planner.errors`` and itself; never a service client, the engine, a backend or a command.
"""
