"""Artifacts in S3: ``$LRTUNE_ARTIFACTS=s3://bucket/prefix`` keeps lrtune's artifacts (the
range-test plots, trial checkpoints, kept weights) in a bucket through Optuna's
:class:`~optuna.artifacts.Boto3ArtifactStore`, for workers on several machines that share
no directory.

boto3 (extra ``lrtune[s3]``) finds credentials, region and endpoint its usual way:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance or pod role;
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) points it at an S3-compatible server
(MinIO, Ceph, moto). The bucket must exist: it is probed once when the store is opened,
so a missing bucket or bad credentials is one line, not a failure at the first upload.
Optuna's store has no key prefix; :class:`PrefixedStore` puts every artifact id under
``prefix/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrtune.errors import UserError, one_line

if TYPE_CHECKING:
    from optuna.artifacts import Boto3ArtifactStore

#: What a ``$LRTUNE_ARTIFACTS`` value starts with to name an S3 location.
S3_SCHEME = "s3://"

#: The probe of the bucket gives up quickly: an unreachable endpoint is one line within
#: seconds, not boto3's default minutes of retries.
_PROBE = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2}}


def is_s3(location: str) -> bool:
    """Whether ``location`` (a ``$LRTUNE_ARTIFACTS`` value) names an S3 bucket."""
    return location.lower().startswith(S3_SCHEME)


def parse_s3(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/some/prefix`` (the prefix without its outer
    slashes, ``""`` for none); a :class:`UserError` when there is no bucket."""
    bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise UserError(f"$LRTUNE_ARTIFACTS={url}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


class PrefixedStore:
    """An Optuna artifact store whose artifact ids are keys under ``prefix/`` of ``store``
    (what ``open_reader``, ``write`` and ``remove`` of any artifact store take)."""

    def __init__(self, store: Boto3ArtifactStore, prefix: str, url: str) -> None:
        self.store, self.prefix, self.url = store, prefix, url

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> Any:
        """A binary reader of the artifact (``ArtifactNotFound`` when there is none)."""
        return self.store.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: Any) -> None:
        """Upload ``content_body`` (a binary file object) as the artifact."""
        self.store.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        """Delete the artifact."""
        self.store.remove(self._key(artifact_id))


def s3_store(url: str) -> PrefixedStore:
    """The store of ``url`` (``s3://bucket/prefix``), its bucket probed first. A one-line
    :class:`UserError` when boto3 is missing or the bucket cannot be reached."""
    bucket, prefix = parse_s3(url)
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise UserError(
            f"$LRTUNE_ARTIFACTS={url}: artifacts in S3 need boto3: pip install 'lrtune[s3]'"
        ) from None
    from optuna.artifacts import Boto3ArtifactStore

    try:
        boto3.client("s3", config=Config(**_PROBE)).head_bucket(Bucket=bucket)
        client = boto3.client("s3")
    except (BotoCoreError, ClientError) as exc:
        raise UserError(
            f"$LRTUNE_ARTIFACTS={url}: cannot use bucket {bucket!r} ({one_line(exc)}); "
            "create it, or check the AWS credentials and AWS_ENDPOINT_URL_S3"
        ) from None
    return PrefixedStore(Boto3ArtifactStore(bucket, client), prefix, url)
