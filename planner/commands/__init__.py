"""Layer 6, the commands: plan, submit, status/watch, cancel, retry, clean, check, policy, report, outputs.

Each module is one command (a new command goes here) over the layers below. May import every layer
below: ``planner.errors``, ``planner.core``, ``planner.sandbox``, ``planner.services``, ``planner.engine``,
``planner.backends``.
"""
