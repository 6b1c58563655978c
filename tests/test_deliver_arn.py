"""Destinations as customers type them (ARNs, s3:// URLs, local paths), each malformed part with
its own message, and the least-privilege IAM policy for an S3 destination."""

import json

import pytest

from skymix.deliver.arn import (
    POLICY_ACTIONS,
    Destination,
    check_bucket_name,
    parse_destination,
    s3_policy,
)
from skymix.errors import OptionsError


@pytest.mark.parametrize(
    ("text", "bucket", "key", "region", "partition"),
    [
        (
            "arn:aws:s3:us-west-2::skylink-recording/calls",
            "skylink-recording",
            "calls/",
            "us-west-2",
            "aws",
        ),
        ("arn:aws:s3:::skylink-recording/calls/", "skylink-recording", "calls/", None, "aws"),
        ("arn:aws:s3:::skylink-recording", "skylink-recording", "", None, "aws"),
        ("arn:aws:s3:::skylink-recording/", "skylink-recording", "", None, "aws"),
        ("arn:aws-cn:s3:cn-north-1::rec.cn/a/b", "rec.cn", "a/b/", "cn-north-1", "aws-cn"),
        (
            "arn:aws-us-gov:s3:us-gov-west-1::gov-rec/x",
            "gov-rec",
            "x/",
            "us-gov-west-1",
            "aws-us-gov",
        ),
        ("arn:aws:s3:::rec/calls/final.mp4", "rec", "calls/final.mp4", None, "aws"),
        ("s3://my-bucket/calls", "my-bucket", "calls/", None, "aws"),
        ("s3://my-bucket/calls/x.webm", "my-bucket", "calls/x.webm", None, "aws"),
        ("s3://my-bucket", "my-bucket", "", None, "aws"),
    ],
)
def test_s3_destinations_parse(text, bucket, key, region, partition):
    d = parse_destination(text)
    assert (d.kind, d.bucket, d.key, d.region, d.partition) == (
        "s3",
        bucket,
        key,
        region,
        partition,
    )


def test_local_path_is_a_local_destination(tmp_path):
    folder = parse_destination(str(tmp_path))
    assert folder == Destination("local", path=str(tmp_path))
    assert folder.object_key("app/room/id.mp4") == str(tmp_path / "app/room/id.mp4")
    named = parse_destination(str(tmp_path / "out.webm"))
    assert named.names_object and named.object_key("ignored.mp4") == str(tmp_path / "out.webm")


def test_a_prefix_takes_the_name_and_an_object_destination_is_the_object():
    prefix = parse_destination("arn:aws:s3:us-west-2::skylink-recording/calls")
    assert not prefix.names_object
    assert prefix.object_key("acme/room/01J.mp4") == "calls/acme/room/01J.mp4"
    top = parse_destination("s3://skylink-recording")
    assert top.object_key("acme/room/01J.mp4") == "acme/room/01J.mp4"
    obj = parse_destination("s3://skylink-recording/calls/Final.MP4")
    assert obj.names_object and obj.object_key("acme/room/01J.mp4") == "calls/Final.MP4"
    assert obj.prefix == "calls/" and prefix.prefix == "calls/"
    assert str(prefix) == "s3://skylink-recording/calls/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty destination"),
        (" s3://bkt/x", "destination has leading or trailing spaces"),
        (
            "arn:aws:s3:bucket",
            "not an ARN: expected arn:partition:s3:region:account:bucket/"
            "prefix, found 4 of its 6 parts",
        ),
        ("ARN:aws:s3:::bkt", "not an ARN: it must begin with lowercase 'arn:'"),
        (
            "arn:aws-xx:s3:::bkt",
            "unknown ARN partition 'aws-xx' (expected one of aws, aws-cn, aws-us-gov)",
        ),
        (
            "arn:aws:sqs:us-east-1:123456789012:queue",
            "not an S3 bucket ARN: service 'sqs' is not S3",
        ),
        (
            "arn:aws:s3-object-lambda:us-east-1:123456789012:accesspoint/x",
            "not an S3 bucket ARN: service 's3-object-lambda' is an S3 service other than buckets",
        ),
        (
            "arn:aws:s3:us-westt::bkt/x",
            "bad region 'us-westt' in ARN (expected a name like us-west-2)",
        ),
        (
            "arn:aws:s3:US-WEST-2::bkt/x",
            "bad region 'US-WEST-2' in ARN (expected a name like us-west-2)",
        ),
        ("arn:aws-cn:s3:us-west-2::bkt/x", "region 'us-west-2' is not in partition 'aws-cn'"),
        ("arn:aws:s3:cn-north-1::bkt/x", "region 'cn-north-1' is not in partition 'aws'"),
        (
            "arn:aws:s3:us-west-2:123456789012:bkt/x",
            "S3 bucket ARNs have no account id: leave it empty (arn:partition:s3:::bucket/prefix)",
        ),
        (
            "arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap",
            "an access point ARN where a "
            "bucket is needed (expected arn:partition:s3:::bucket/prefix)",
        ),
        (
            "arn:aws:s3:us-west-2:123456789012:job/abc",
            "a batch operations job ARN where a "
            "bucket is needed (expected arn:partition:s3:::bucket/prefix)",
        ),
        (
            "arn:aws:s3:::bkt/calls/*",
            "an object ARN pattern (with * or ?) where a bucket is "
            "needed (expected arn:partition:s3:::bucket/prefix)",
        ),
        ("arn:aws:s3:::", "bad ARN: no bucket name"),
        ("arn:aws:s3:::/calls", "bad ARN: no bucket name"),
        ("arn:aws:s3:::bkt:x", "bad ARN resource: a bucket name has no ':'"),
        (
            "arn:aws:s3:::bkt/a//b",
            "bad ARN key or prefix: empty, '.' and '..' parts are not allowed",
        ),
        (
            "s3://bkt/../etc",
            "bad s3:// URL key or prefix: empty, '.' and '..' parts are not allowed",
        ),
        ("s3://bkt/a\nb", "bad s3:// URL key or prefix: control characters are not allowed"),
        ("s3://bkt/" + "k" * 1100, "bad s3:// URL key or prefix: longer than S3's 1024 bytes"),
        (
            "gs://bkt/x",
            "unsupported destination scheme 'gs' (expected an S3 ARN, an s3:// URL "
            "or a local path)",
        ),
        ("out\x00.mp4", "bad local path: control characters are not allowed"),
    ],
)
def test_each_malformed_part_has_its_own_message(text, message):
    with pytest.raises(OptionsError) as caught:
        parse_destination(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "must be 3 to 63 characters long"),
        ("a" * 64, "must be 3 to 63 characters long"),
        ("My-Bucket", "only lowercase letters, digits, dots and hyphens"),
        ("my_bucket", "only lowercase letters, digits, dots and hyphens"),
        ("-bucket", "must begin and end with a letter or digit"),
        ("bucket.", "must begin and end with a letter or digit"),
        ("my..bucket", "must not contain two adjacent dots"),
        ("192.168.5.4", "must not be an IP address"),
        ("xn--bucket", "must not begin with 'xn--'"),
        ("sthree-bucket", "must not begin with 'sthree-'"),
        ("amzn-s3-demo-bucket", "must not begin with 'amzn-s3-demo-'"),
        ("bucket-s3alias", "must not end with '-s3alias'"),
        ("bucket--ol-s3", "must not end with '--ol-s3'"),
        ("bucket.mrap", "must not end with '.mrap'"),
        ("bucket--x-s3", "must not end with '--x-s3'"),
        ("bucket--table-s3", "must not end with '--table-s3'"),
    ],
)
def test_bucket_names_follow_s3_rules(name, rule):
    with pytest.raises(OptionsError) as caught:
        parse_destination(f"arn:aws:s3:::{name}/calls")
    assert str(caught.value) == f"bad bucket name {name!r}: {rule}"


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "1bucket", "192.168.5.x4"])
def test_valid_bucket_names_pass(name):
    assert check_bucket_name(name) == name


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_policy_is_object_actions_on_the_prefix_only(partition):
    policy = s3_policy(f"arn:{partition}:s3:::skylink-recording/calls")
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SkymixRecordingObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                    "s3:GetObject",
                    "s3:DeleteObject",
                ],
                "Resource": f"arn:{partition}:s3:::skylink-recording/calls/*",
            }
        ],
    }
    json.dumps(policy)  # printable as it is
    for statement in policy["Statement"]:
        assert all(a.startswith("s3:") and "*" not in a for a in statement["Action"])
        assert statement["Resource"].startswith(f"arn:{partition}:s3:::skylink-recording/")


def test_policy_for_the_region_form_the_bucket_top_and_a_named_object():
    region_form = s3_policy(parse_destination("arn:aws:s3:us-west-2::skylink-recording/calls"))
    assert region_form["Statement"][0]["Resource"] == "arn:aws:s3:::skylink-recording/calls/*"
    top = s3_policy("s3://skylink-recording")
    assert top["Statement"][0]["Resource"] == "arn:aws:s3:::skylink-recording/*"
    named = s3_policy("arn:aws-cn:s3:::rec/calls/final.mp4")
    assert named["Statement"][0]["Resource"] == "arn:aws-cn:s3:::rec/calls/*"
    assert list(POLICY_ACTIONS) == top["Statement"][0]["Action"]


def test_policy_refuses_a_local_destination(tmp_path):
    with pytest.raises(OptionsError, match="a local destination has no IAM policy"):
        s3_policy(str(tmp_path))


def test_the_s3_policy_command_prints_the_policy_and_refuses_a_bad_arn() -> None:
    import json
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "skymix",
            "s3-policy",
            "arn:aws:s3:us-west-2::skylink-recording/calls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    policy = json.loads(run.stdout)
    assert policy["Statement"][0]["Resource"] == "arn:aws:s3:::skylink-recording/calls/*"
    bad = subprocess.run(
        [sys.executable, "-m", "skymix", "s3-policy", "arn:aws:s3:us-west-2:123456789012:b/p"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "account id" in bad.stderr and "Traceback" not in bad.stderr
