"""Layer 4, the engine: every call to a service is made, waited for and journaled here.

May import: ``planner.errors``, ``planner.core``, ``planner.services``.
"""
