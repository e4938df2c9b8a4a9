"""The one error tree of the pipeline.

    PipelineError                 anything the pipeline raises on purpose
    ├── RetryableError            transient: the message is requeued (bounded by the delivery limit)
    └── PermanentError            will fail again: dead-lettered, request marked ``failed``
        ├── InvalidMessage        a body that is not a valid message of a known schema
        └── CredentialsRejected   the Chouette API answered 401/403

The broker layer (``shared/broker.py``) is the only place that maps these to
acknowledgements, so services never touch acks.
"""


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class RetryableError(PipelineError):
    """A transient failure: trying the same message again may succeed."""


class PermanentError(PipelineError):
    """A failure that will repeat: the request ends ``failed`` with this text."""


class InvalidMessage(PermanentError):
    """A message body that does not parse or validate."""


class CredentialsRejected(PermanentError):
    """The Chouette API rejected the configured credentials (401/403)."""
