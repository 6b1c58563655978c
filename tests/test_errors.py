"""The error hierarchy is part of the API: each class, its builtin base and its stable code."""

import concurrent.futures

import pytest

import skymix.errors as errors
from skymix.errors import SkymixError

# class name -> (builtin bases it must also be, code); codes never change once published
PINNED = {
    "SkymixError": ((Exception,), "skymix_error"),
    "CaptureError": ((ValueError,), "capture_invalid"),
    "ComposeError": ((ValueError,), "compose_invalid"),
    "DecodeError": ((ValueError,), "decode_unsupported"),
    "DescriptionError": ((ValueError,), "description_invalid"),
    "OptionsError": ((ValueError,), "options_invalid"),
    "JobTooLargeError": ((ValueError,), "job_too_large"),
    "NothingToMixError": ((ValueError,), "nothing_to_mix"),
    "DamageError": ((ValueError,), "input_damaged"),
    "OutputConflictError": ((ValueError,), "output_conflict"),
    "OutputError": ((OSError,), "output_failed"),
    "CancelledError": ((concurrent.futures.CancelledError,), "cancelled"),
    "DeliveryError": ((OSError,), "delivery_failed"),
    "InternalError": ((RuntimeError,), "internal_error"),
    "RecordingStateError": ((RuntimeError,), "recording_state_invalid"),
    "SecretKeyError": ((ValueError,), "secret_key_invalid"),
    "RelayError": ((OSError,), "relay_failed"),
}


def test_every_error_class_is_pinned():
    exported = {name for name in errors.__all__}
    assert exported == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_class_bases_and_code(name):
    cls = getattr(errors, name)
    bases, code = PINNED[name]
    assert issubclass(cls, SkymixError)
    for base in bases:
        assert issubclass(cls, base), f"{name} is not a {base.__name__}"
    assert cls.code == code


def test_codes_are_unique():
    codes = [code for _, code in PINNED.values()]
    assert len(codes) == len(set(codes))


def test_located_errors_say_where():
    e = errors.CaptureError("bad record", file="a.pcap", offset=24, ssrc=0x1234, seq=7)
    assert str(e) == "a.pcap, offset 24, ssrc 0x00001234, seq 7: bad record"
    assert (e.file, e.offset, e.ssrc, e.seq) == ("a.pcap", 24, 0x1234, 7)
    d = errors.DescriptionError("not a port", file="a.sdp", line=3)
    assert str(d) == "a.sdp, line 3: not a port"
    o = errors.OptionsError("crf must be 0-51, got 1000", field="encode.crf")
    assert str(o) == "encode.crf: crf must be 0-51, got 1000" and o.field == "encode.crf"


def test_errors_are_importable_from_the_package():
    import skymix

    for name in PINNED:
        assert getattr(skymix, name) is getattr(errors, name)


def test_delivery_error_keeps_the_last_exception():
    cause = TimeoutError("slow")
    e = errors.DeliveryError("upload failed", cause)
    assert e.last_exception is cause


def test_a_file_that_is_not_a_capture_is_never_quoted(tmp_path):
    """Reading a file that is no capture (a service given /etc/shadow, say) names the file and
    says why, never its bytes."""
    from skymix.ingest import capture_format, read_mjr

    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$SECRETSALT$hash:19000:0:99999:7:::\n")
    for read in (capture_format, read_mjr):
        with pytest.raises(errors.CaptureError) as info:
            read(secret)
        assert "SECRETSALT" not in str(info.value) and "19000" not in str(info.value)
