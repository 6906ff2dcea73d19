"""Soak: two gateway nodes on one PostgreSQL behind one address, killed with -9 at random and restarted.

The senders of test_kill9 (python-hl7's real MLLPClient, resending a message until it is answered) talk to
one address: a TCP balancer in this test that hands each new connection to the next node that accepts it,
round robin, as HAProxy does in deploy/haproxy.cfg. A connection cut by a kill is resent through the
balancer and so often reaches the other node, which must answer with the original ACK when the first node
had committed it. Meanwhile the nodes are killed in turn with SIGKILL at random moments and restarted, so each node's
leases are taken over by the one alive. At the end every acknowledged message must have reached the portal
emulator (a separate process that outlives every kill) exactly once. Duration: HEALTHBOOK_SOAK_SECONDS.
"""
from __future__ import annotations

import base64
import os
import random
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.harness import GatewayProcess, http_json, wait_until
from tests.e2e.test_kill9 import SENDERS, Sender, document_key, expected_key, message, start_emulator

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("HEALTHBOOK_SOAK_SECONDS", "20"))
DRAIN_SECONDS = 90.0


class TcpBalancer(threading.Thread):
    """One listening address in front of several backends: each new connection goes to the next backend
    that accepts it, and bytes are copied both ways until either side closes."""

    def __init__(self, backend_ports: list[int]) -> None:
        super().__init__(name="balancer", daemon=True)
        self.backends = backend_ports
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = Counter[int]()
        self._next = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._copy, args=(source, target), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError:
                continue  # that node is down: the health check would have taken it out
            upstream.settimeout(None)
            self.connections[port] += 1
            return upstream
        return None

    @staticmethod
    def _copy(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
        self.listener.close()


class Address:
    """What a Sender needs of a gateway: the port it connects to (here, the balancer's)."""

    def __init__(self, port: int) -> None:
        self.mllp_port = port


def test_two_nodes_on_postgresql_deliver_every_acknowledged_message_once_across_kill9(
        tmp_path: Path, postgres_dsn: str) -> None:
    assert document_key(message("S9N00001", 7)) == expected_key("S9N00001")
    emulator_port = free_port()
    emulator = start_emulator(emulator_port, tmp_path / "emulator.log")
    shared = {"HBGW_EMULATOR__ENABLED": "false", "HBGW_STORE__BACKEND": "postgresql",
              "HBGW_STORE__DSN": postgres_dsn, "HBGW_STORE__LEASE_SECONDS": "30",
              "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
              "HBGW_SIGNING__DEV_DIR": str(tmp_path / "dev-cert")}  # one facility certificate for both
    nodes = [GatewayProcess(tmp_path / f"node{n}", command="serve", emulator_port=emulator_port,
                            extra_env=shared) for n in (1, 2)]
    balancer = TcpBalancer([gateway.mllp_port for gateway in nodes])
    stop = threading.Event()
    senders = [Sender(n, Address(balancer.port), stop) for n in range(SENDERS)]  # type: ignore[arg-type]
    kills = Counter[int]()
    try:
        for gateway in nodes:
            gateway.start()
        balancer.start()
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + SOAK_SECONDS
        victim = random.randrange(len(nodes))
        while time.monotonic() < deadline or sum(kills.values()) < 3:  # a short budget still kills 3 times
            time.sleep(random.uniform(1.0, 3.0))
            victim = (victim + 1) % len(nodes)  # in turn, at random moments: each node dies under load
            nodes[victim].kill9()
            kills[victim] += 1
            time.sleep(random.uniform(0.0, 1.5))  # the other node carries the load meanwhile
            nodes[victim].start()
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
        wait_until(lambda: nodes[0].work_left() == 0, DRAIN_SECONDS, interval=0.5, what="the outbox to drain")
        stats = http_json(f"http://127.0.0.1:{emulator_port}/_emulator/stats")
    finally:
        stop.set()
        for gateway in nodes:
            gateway.stop()
        emulator.terminate()
        emulator.wait(timeout=30)
        balancer.stop()

    sent = [control_id for sender in senders for control_id in sender.sent]
    acked = [control_id for sender in senders for control_id in sender.acked]
    expected = {expected_key(control_id) for control_id in acked}
    accepted = stats["accepted_keys"]
    print(f"two-node soak {SOAK_SECONDS:.0f}s: kills per node {dict(kills)}, connections per node"
          f" {dict(balancer.connections)}, {len(sent)} sent, {len(acked)} acknowledged,"
          f" {sum(s.resends for s in senders)} resends, {len(accepted)} accepted by the portal,"
          f" {stats['duplicates']} duplicate submissions answered idempotently")
    assert sum(kills.values()) >= 3 and len(kills) == 2 and len(acked) >= 50  # under load, across crashes
    assert all(balancer.connections[gateway.mllp_port] for gateway in nodes)  # both nodes took traffic
    assert len(acked) == len(set(acked))
    assert [key for key, count in Counter(accepted).items() if count > 1] == []  # nothing arrived twice
    assert sorted(expected - set(accepted)) == []  # nothing acknowledged was lost
    assert set(accepted) <= {expected_key(control_id) for control_id in sent}  # nothing arrived unsent
