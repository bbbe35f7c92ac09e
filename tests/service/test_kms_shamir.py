"""Shamir split/combine over GF(2^8): round trips, thresholds, field laws, share text."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import ConfigError
from sealpod.kms import shamir
from sealpod.kms.shamir import Share, combine, split


@given(
    secret=st.binary(min_size=1, max_size=48),
    params=st.integers(2, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=60, deadline=None)
def test_any_threshold_subset_recovers(secret: bytes, params: tuple[int, int], seed: int) -> None:
    n, k = params
    parts = split(secret, shares=n, threshold=k)
    assert len(parts) == n
    chosen = random.Random(seed).sample(parts, k)
    assert combine(chosen) == secret
    assert combine(parts) == secret  # more than the threshold works too


def test_every_3_of_5_subset_recovers() -> None:
    secret = bytes(range(32))
    parts = split(secret, shares=5, threshold=3)
    for subset in itertools.combinations(parts, 3):
        assert combine(list(subset)) == secret


def test_fewer_than_threshold_gives_a_wrong_value() -> None:
    secret = bytes(32)
    parts = split(secret, shares=5, threshold=3)
    # 2 of 3 shares: the interpolation is of the wrong polynomial (random with prob 1-2^-256).
    assert combine(parts[:2]) != secret


def test_shares_of_one_byte_secret_are_uniformish() -> None:
    # With threshold 2 a single share is a uniformly random byte whatever the secret:
    # over many splits every value of share 1 appears for a fixed secret.
    seen = {split(b"\x00", shares=2, threshold=2)[0].value[0] for _ in range(4000)}
    assert len(seen) > 240


@given(a=st.integers(0, 255), b=st.integers(0, 255), c=st.integers(0, 255))
def test_field_laws(a: int, b: int, c: int) -> None:
    mul = shamir._mul
    assert mul(a, b) == mul(b, a)
    assert mul(a, mul(b, c)) == mul(mul(a, b), c)
    assert mul(a, b ^ c) == mul(a, b) ^ mul(a, c)
    assert mul(a, 1) == a
    if a:
        assert mul(a, shamir._inv(a)) == 1


def test_known_product() -> None:
    # FIPS-197 §4.2: {57} . {83} = {c1}.
    assert shamir._mul(0x57, 0x83) == 0xC1


@given(index=st.integers(1, 255), value=st.binary(min_size=1, max_size=40))
def test_share_text_round_trips(index: int, value: bytes) -> None:
    s = Share(index=index, value=value)
    assert Share.from_text(s.to_text()) == s
    assert Share.from_text("  " + s.to_text() + "\n") == s


def test_mistyped_share_is_refused() -> None:
    text = split(b"k" * 32, shares=3, threshold=2)[0].to_text()
    body = text.split("-")[4]
    flipped = body[:-1] + ("0" if body[-1] != "0" else "1")
    with pytest.raises(ConfigError, match="check value"):
        Share.from_text(text.replace(body, flipped))


@pytest.mark.parametrize(
    "text",
    ["", "hello", "sealpod-share-v1-0-00-0000", "sealpod-share-v1-256-00-0000",
     "sealpod-share-v1-x-00-0000", "sealpod-share-v1-1-zz-0000", "sealpod-share-v1-1--0000",
     "sealpod-share-v2-1-00-0000"],
)  # fmt: skip
def test_malformed_share_text(text: str) -> None:
    with pytest.raises(ConfigError):
        Share.from_text(text)


@given(text=st.text(max_size=80))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        Share.from_text(text)
    except ConfigError:
        pass


@pytest.mark.parametrize(("n", "k"), [(1, 1), (3, 1), (2, 3), (256, 2), (0, 0)])
def test_bad_split_parameters(n: int, k: int) -> None:
    with pytest.raises(ConfigError):
        split(b"x", shares=n, threshold=k)


def test_empty_secret_and_bad_combines() -> None:
    with pytest.raises(ConfigError):
        split(b"", shares=3, threshold=2)
    with pytest.raises(ConfigError):
        combine([])
    a = Share(index=1, value=b"ab")
    with pytest.raises(ConfigError, match="repeat"):
        combine([a, a])
    with pytest.raises(ConfigError, match="lengths"):
        combine([a, Share(index=2, value=b"abc")])


def test_share_repr_hides_value() -> None:
    s = Share(index=1, value=b"\x01" * 32)
    assert "01" * 4 not in repr(s)
