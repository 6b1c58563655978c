"""Delivering recordings: the customer's storage (S3 by ARN, or a local folder), download links,
recording states, signed webhooks and e-mail (issue 10). Each module holds one of these jobs."""
