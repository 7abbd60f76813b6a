"""deploy/: the production NATS configurations start real nats-servers that do what deploy/README.md says.

Each file is copied as it is, with only its machine-specific values (ports, host names, paths) replaced, so a
change to a configuration that nats-server refuses, or that breaks the cluster, fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError

from services.federation import wire
from services.federation.access import authorization
from services.federation.publisher import DUPLICATE_WINDOW_SECONDS, Publisher
from services.node.nats import find_nats_server
from services.node.processes import LOCALHOST, free_port
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODES = (1, 2, 3)
NETWORK = "riverside"
USER = "timebank"
PASSWORD = "local-password"
STREAM, SUBJECT = f"timebank-{NETWORK}-log", f"timebank.{NETWORK}.log"


def install(source: Path, target: Path, replacements: dict[str, str]) -> Path:
    """Copy a configuration file with each of ``replacements`` made; every one must occur in it."""
    text = source.read_text()
    for old, new in replacements.items():
        assert old in text, f"{source.name} no longer holds {old!r}: update this test with it"
        text = text.replace(old, new)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def monitor(port: int, endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/{endpoint}", timeout=2) as response:
        found: dict[str, Any] = json.load(response)
    return found


def wait_for(what: str, ready: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> Any:
    """Poll ``ready()`` until it returns something true; fail early if a server exited."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            assert proc.poll() is None, f"a nats-server exited ({proc.returncode}) while waiting for {what}"
        try:
            found = ready()
        except OSError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def running(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([str(find_nats_server()), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def publisher_on(js: JetStreamContext) -> Publisher:
    """The federation's publisher, for what it does on the stream alone (no ledger or database is reached)."""
    return Publisher(
        cast("Any", None), cast("Any", None), js, origin=f"timebank.example/{NETWORK}", name=NETWORK, poll=1
    )


def write_authorization(directory: Path) -> None:
    """The block the federation renders, with a neighbour let in, beside the configuration that includes it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "authorization.conf").write_text(authorization(NETWORK, USER, PASSWORD, {"hillside": "h-pass"}))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[int, dict[str, int]]]:
    """deploy/nats/cluster-node-{1,2,3}.conf on loopback ports: each node's client and monitoring ports."""
    ports = {n: {"client": free_port(), "http": free_port(), "route": free_port()} for n in NODES}
    with ExitStack() as stack:
        procs = []
        for n in NODES:
            home = tmp_path / f"node-{n}"
            replacements = {
                '"0.0.0.0:4222"': f'"{LOCALHOST}:{ports[n]["client"]}"',
                '"127.0.0.1:8222"': f'"{LOCALHOST}:{ports[n]["http"]}"',
                f'"nats-{n}.{NETWORK}.example:4222"': f'"{LOCALHOST}:{ports[n]["client"]}"',
                '"0.0.0.0:6222"': f'"{LOCALHOST}:{ports[n]["route"]}"',
                '"/var/lib/timebank/nats"': json.dumps(str(home / "jetstream")),
                '"/run/timebank/nats-server.pid"': json.dumps(str(home / "nats-server.pid")),
            }
            for m in NODES:
                replacements[f"nats-{m}.{NETWORK}.internal:6222"] = f"{LOCALHOST}:{ports[m]['route']}"
            config = install(DEPLOY / "nats" / f"cluster-node-{n}.conf", home / f"cluster-node-{n}.conf", replacements)
            write_authorization(home)
            procs.append(stack.enter_context(running(config, home / "nats-server.log")))

        def meta_cluster() -> bool:
            for n in NODES:
                meta = monitor(ports[n]["http"], "jsz").get("meta_cluster") or {}
                if meta.get("cluster_size") != 3 or not meta.get("leader"):
                    return False
            return True

        wait_for("the JetStream meta cluster of three with a leader", meta_cluster, procs)
        yield ports


async def test_the_three_node_cluster_replicates_a_stream_in_the_networks_domain(
    cluster: dict[int, dict[str, int]],
) -> None:
    for n in NODES:
        jsz = monitor(cluster[n]["http"], "jsz")
        assert jsz["config"]["domain"] == NETWORK
        assert jsz["meta_cluster"]["name"] == NETWORK
        assert monitor(cluster[n]["http"], "varz")["server_name"] == f"{NETWORK}-nats-{n}"
    url = {n: f"nats://{LOCALHOST}:{cluster[n]['client']}" for n in NODES}

    # The operator creates our log stream with three replicas, as README.md says; the federation's publisher then
    # keeps it as it is, and each neighbour's consumer takes the stream's replicas.
    first = await nats.connect(servers=[url[1]], user=USER, password=PASSWORD)
    try:
        js = first.jetstream()  # as the federation connects: no domain, our own
        config = StreamConfig(
            name=STREAM,
            subjects=[SUBJECT],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=3,
        )
        deadline = time.monotonic() + 30
        while True:  # the meta leader may still be placing the peers
            try:
                await js.add_stream(config)
                break
            except APIError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        publisher = publisher_on(js)
        await publisher.prepare()
        await publisher.offer_to(["hillside"])
        batch = wire.LogBatch(origin=f"timebank.example/{NETWORK}", start=0, entries=[b"entry 0"], checkpoint=None)
        await js.publish(SUBJECT, wire.encoder.encode(batch), headers={"Nats-Msg-Id": wire.message_id(batch)})
    finally:
        await first.close()

    # On another node: the stream has a leader and two current replicas, and a publisher resumes after the batch.
    second = await nats.connect(servers=[url[2]], user=USER, password=PASSWORD)
    try:
        js = second.jetstream(domain=NETWORK)
        info = await js.stream_info(STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert info.cluster.leader is not None
        assert len(info.cluster.replicas or []) == 2
        consumer = await js.consumer_info(STREAM, "peer-hillside")
        assert consumer.cluster is not None
        assert len(consumer.cluster.replicas or []) == 2
        message = await js.get_last_msg(STREAM, SUBJECT)
        assert wire.decoder.decode(message.data or b"") == batch
        again = publisher_on(js)
        await again.prepare()
        assert again.published == 1
    finally:
        await second.close()

    # The neighbour's credential from the included block signs in, and may not create streams.
    neighbour = await nats.connect(servers=[url[3]], user="peer-hillside", password="h-pass")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await neighbour.jetstream(domain=NETWORK, timeout=2).add_stream(name="intruder", subjects=["intruder"])
    finally:
        await neighbour.close()


def test_the_single_server_configuration_serves_jetstream_in_the_networks_domain(tmp_path: Path) -> None:
    client, http = free_port(), free_port()
    config = install(
        DEPLOY / "nats-server.conf",
        tmp_path / "nats-server.conf",
        {
            '"0.0.0.0:4222"': f'"{LOCALHOST}:{client}"',
            '"127.0.0.1:8222"': f'"{LOCALHOST}:{http}"',
            '"/var/lib/timebank/nats"': json.dumps(str(tmp_path / "jetstream")),
            '"/run/timebank/nats-server.pid"': json.dumps(str(tmp_path / "nats-server.pid")),
        },
    )
    write_authorization(tmp_path / "nats")
    with running(config, tmp_path / "nats-server.log") as proc:
        jsz = wait_for("JetStream", lambda: monitor(http, "jsz"), [proc])
        assert jsz["config"]["domain"] == NETWORK
        # The pid file the federation signals after rewriting the users.
        assert int((tmp_path / "nats-server.pid").read_text()) == proc.pid


def test_the_shipped_authorization_file_is_what_a_server_accepts(tmp_path: Path) -> None:
    http = free_port()
    shipped = (DEPLOY / "nats" / "authorization.conf").read_text()
    (tmp_path / "authorization.conf").write_text(shipped)
    config = tmp_path / "nats-server.conf"
    config.write_text(
        f'listen: "{LOCALHOST}:{free_port()}"\nhttp: "{LOCALHOST}:{http}"\ninclude "authorization.conf"\n'
    )
    with running(config, tmp_path / "nats-server.log") as proc:
        varz = wait_for("the server", lambda: monitor(http, "varz"), [proc])
        assert varz["auth_required"] is True


def test_node_toml_and_its_commented_federation_section_are_valid_settings() -> None:
    text = (DEPLOY / "node.toml").read_text()
    settings = msgspec.convert(tomllib.loads(text), Settings)
    assert settings.nats.authorization_file is not None
    assert Path(settings.nats.authorization_file).name == "authorization.conf"
    assert settings.nats.pid_file is not None
    # The commented examples, uncommented: every key must be one the settings know.
    example = re.compile(r"^# (\[.*\]|\w+ = .*)$")
    uncommented = "\n".join(m.group(1) if (m := example.match(line)) else line for line in text.splitlines())
    federation = msgspec.convert(tomllib.loads(uncommented), Settings).federation
    assert federation.name == NETWORK
    assert [p.origin for p in federation.peers] == ["timebank.example/hillside"]
    assert federation.peers[0].trust_limit == 600
    assert len(federation.witnesses) == 1
