"""The tests' SeaweedFS S3 server: skymix.demo.seaweed's launcher (the one the demo uses) with the
test identities and a bucket policy helper.

Started on 127.0.0.1 with an identity file, so wrong keys really fail; ports chosen free; ready
once ``head_bucket`` answers; stopped by its process id; ``restart`` keeps what was stored.
"""

from __future__ import annotations

import json

from skymix.demo import seaweed as _launcher
from skymix.demo.seaweed import Identity, free_port_pairs

__all__ = [
    "NO_DELETE_PREFIX",
    "S3_ADMIN",
    "S3_READ_ONLY",
    "S3_WRITE_ONLY",
    "Identity",
    "SeaweedS3",
    "free_port_pairs",
]

#: Identities of the shared test server: full access, read-only, write-only. SeaweedFS's
#: identity actions cannot express write-without-delete ("Write" covers DeleteObject too): the
#: shared server's bucket policy denies DeleteObject under NO_DELETE_PREFIX instead.
S3_ADMIN = Identity("SKYMIXADMINKEY01", "adm1n-Secret-Key-0000WQON")
S3_READ_ONLY = Identity("SKYMIXREADONLY01", "r3ad-Only-Secret-1111ABCD", ("Read", "List"))
S3_WRITE_ONLY = Identity("SKYMIXWRITEONLY1", "wr1te-Only-Secret-2222EFGH", ("Write", "List"))
NO_DELETE_PREFIX = "no-delete/"


class SeaweedS3(_launcher.SeaweedS3):
    """The launcher's server, plus a bucket policy for the permission tests."""

    def deny_delete(self, prefix: str) -> None:
        """A bucket policy refusing DeleteObject under ``prefix`` to everyone."""
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:DeleteObject",
                    "Resource": f"arn:aws:s3:::{self.bucket}/{prefix}*",
                }
            ],
        }
        self.client().put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(policy))
