"""The planner knows every status the HealthOmics model documents for a run batch."""

from __future__ import annotations

import botocore.session

from planner.backends import omics_batch


def test_batch_statuses_partition_the_models_eleven_values() -> None:
    enum = botocore.session.get_session().get_service_model("omics").shape_for("BatchStatus").enum
    groups = (omics_batch.BATCH_STARTING, omics_batch.BATCH_OPERATING, omics_batch.BATCH_ENDED)
    assert len(enum) == 11 and sorted(set().union(*groups)) == sorted(enum)
    assert sum(len(group) for group in groups) == len(enum)  # each value in exactly one group
    assert omics_batch.BATCH_STARTING - {"CREATING"} >= omics_batch.BATCH_CANCELLABLE
    assert omics_batch.BATCH_RUNS_DELETABLE <= omics_batch.BATCH_ENDED
