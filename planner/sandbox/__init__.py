"""The embedded local AWS: moto for S3, Batch and Glue, plus the HealthOmics and Polly emulators."""
