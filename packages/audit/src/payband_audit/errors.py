"""What can go wrong when recording or reading the audit log."""


class AuditError(Exception):
    """Base of every audit log error."""


class AuditUnavailable(AuditError):
    """The record could not be committed now (database down, queue full, timeout); retry later.

    A service that gets this must not answer as if the decision had been recorded.
    """


class AuditConfigError(AuditError):
    """The audit log is misconfigured: a bad URL, or a database that is not migrated."""


class AuditRejected(AuditError):
    """The record itself is refused; retrying it will not help."""


class UnknownPrediction(AuditRejected):
    """An outcome or review names a prediction that was never recorded."""


class OutcomeAlreadyRecorded(AuditRejected):
    """The prediction already has its outcome (at most one per prediction)."""


class DuplicatePrediction(AuditRejected):
    """A prediction with this id is already recorded."""
