"""smtp-shipper: SMTP conversation transcripts → per-recipient delivery documents in OpenSearch."""

__version__ = "0.1.0"
