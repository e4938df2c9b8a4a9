"""Link safety: only http(s), no private addresses except the API's own host."""

from __future__ import annotations

import pytest

from services.fetcher.links import GuardedResolver, LinkPolicy, UnsafeLink, source_key


def test_source_key_drops_query_and_fragment() -> None:
    link = "HTTPS://Bucket.S3.amazonaws.com/img/a.jpg?X-Amz-Signature=abc&X-Amz-Date=1#frag"
    assert source_key(link) == "https://bucket.s3.amazonaws.com/img/a.jpg"


@pytest.mark.parametrize(
    "link",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://example.com/",
        "http://127.0.0.1:5432/",
        "http://10.0.0.5/a.jpg",
        "http://192.168.1.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://100.64.0.1/a.jpg",
        "http://0.0.0.0/a.jpg",
        "http:///a.jpg",
        "http://example.com:99999/a.jpg",
    ],
)
def test_refused_links(link: str) -> None:
    with pytest.raises(UnsafeLink) as info:
        LinkPolicy.for_api("https://api.example.com").check(link)
    assert info.value.reason == "refused link"


def test_public_and_own_host_links_pass() -> None:
    policy = LinkPolicy.for_api("http://127.0.0.1:8081")
    policy.check("https://bucket.s3.eu-west-3.amazonaws.com/a.jpg?sig=1")
    policy.check("http://8.8.8.8/a.jpg")
    policy.check("http://127.0.0.1:8081/media/field/x.jpg?sig=1")  # the API's own host


@pytest.mark.parametrize(
    "link",
    [
        "http://127.0.0.1:5432/",  # the API's host, another port: a database
        "http://127.0.0.1/a.jpg",  # port 80, not the API's 8081
        "http://127.0.0.2:8081/a.jpg",
    ],
)
def test_api_host_is_trusted_on_its_own_port_only(link: str) -> None:
    with pytest.raises(UnsafeLink):
        LinkPolicy.for_api("http://127.0.0.1:8081").check(link)


def test_default_ports_are_filled_in() -> None:
    LinkPolicy.for_api("https://10.0.0.9").check("https://10.0.0.9:443/a.jpg")
    with pytest.raises(UnsafeLink):
        LinkPolicy.for_api("https://10.0.0.9").check("http://10.0.0.9/a.jpg")  # port 80


def test_allow_private_hosts() -> None:
    LinkPolicy([], allow_private=True).check("http://10.0.0.5/a.jpg")
    with pytest.raises(UnsafeLink):
        LinkPolicy([], allow_private=True).check("file:///etc/passwd")


class FakeResolver:
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict]:
        return [{"hostname": host, "host": self.address, "port": port, "family": family,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None


async def test_resolver_refuses_names_that_resolve_to_private_addresses() -> None:
    policy = LinkPolicy.for_api("http://api.example.com")
    with pytest.raises(UnsafeLink, match="resolves to a private"):
        await GuardedResolver(policy, FakeResolver("10.1.2.3")).resolve("evil.example.com", 80)
    ok = await GuardedResolver(policy, FakeResolver("10.1.2.3")).resolve("api.example.com", 80)
    assert ok[0]["host"] == "10.1.2.3"
    public = await GuardedResolver(policy, FakeResolver("52.95.1.1")).resolve("s3.example", 443)
    assert public[0]["host"] == "52.95.1.1"


async def test_resolver_trusts_the_api_host_on_its_port_only() -> None:
    policy = LinkPolicy.for_api("http://api.example.com:8081")
    resolver = GuardedResolver(policy, FakeResolver("10.1.2.3"))
    assert (await resolver.resolve("api.example.com", 8081))[0]["host"] == "10.1.2.3"
    with pytest.raises(UnsafeLink, match="resolves to a private"):
        await resolver.resolve("api.example.com", 5432)
