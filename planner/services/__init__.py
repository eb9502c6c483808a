"""Layer 3, the clients of AWS and Polly: how the planner reaches a service (a new AWS call goes here).

May import: ``planner.errors``, ``planner.core``, ``planner.sandbox`` (started by the access object only).
"""
