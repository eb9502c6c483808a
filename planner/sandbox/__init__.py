"""Layer 2, the sandbox: a local AWS on loopback (moto for S3, Batch and Glue; our HealthOmics and Polly).

May import: ``planner.errors``, ``planner.core``; moto only inside functions (an optional extra).
"""
