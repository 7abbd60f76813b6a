"""The federation's HTTP API: its status per peer, the fork evidence and a coordinator's resolution of it, peers,
the witness, and the verified copies of neighbours' logs, served like our own log so that an auditor can fetch
both networks' logs from either one."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from services.federation import access, copies, settle, store
from services.federation.guards import require_coordinator, require_reader
from services.federation.peers import Peer
from services.federation.supervisor import Federation
from services.ledger.client import LedgerClient, LedgerError
from shared.errors import NotFound
from shared.settings import PeerSettings
from shared.web import StrictRequest

MAX_INDEX = 2**62


class RejectionView(msgspec.Struct, kw_only=True):
    reason: str
    count: int
    last_detail: str
    last_at: datetime


class Flight(msgspec.Struct, kw_only=True):
    payments: int
    minutes: int


class PeerStatus(msgspec.Struct, kw_only=True):
    origin: str
    name: str
    # Entries of the neighbour's log held in our verified copy, and when the copy last grew.
    replicated_size: int
    replicated_at: datetime | None
    # Entries the neighbour sent that are not verified and stored yet, and for how long the copy has been behind.
    lag_entries: int
    lag_seconds: float
    # When the neighbour's NATS server last answered us (None: never, since this process started).
    last_contact_at: datetime | None
    # The size of the neighbour's log our witness last cosigned.
    witnessed_size: int
    trust_limit: int
    # How much of the trust limit the neighbour's members use: what they owe ours, by settled payments.
    trust_used: int
    # Our members' payments to theirs not yet accepted (nor reversed), and theirs to ours not yet decided here.
    in_flight_out: Flight
    in_flight_in: Flight
    # The neighbour's clearing account in our ledger (None until linked).
    clearing_account: str | None
    rejected: list[RejectionView]


class CosignerView(msgspec.Struct, kw_only=True):
    witness: str
    # The size of our log it last cosigned, and when.
    size: int
    cosigned_at: datetime


class AlertView(msgspec.Struct, kw_only=True):
    origin: str
    kind: str  # "fork": two checkpoints that cannot both be true
    detail: str
    detected_at: datetime
    # The two signed notes, as evidence.
    first_note: str
    second_note: str


class Status(msgspec.Struct, kw_only=True):
    origin: str
    name: str
    # Our witness's cosignature verifier key (C2SP vkey text): what neighbours and auditors check its cosignatures by.
    witness_key: str
    cosigners: list[CosignerView]
    alerts: list[AlertView]
    # Entries of our own log published to our log stream (by this process).
    published_size: int
    peers: list[PeerStatus]


class EvidenceView(msgspec.Struct, kw_only=True):
    """Two signed checkpoints of one log that cannot both be true, and what a coordinator did about them."""

    id: int
    origin: str
    kind: str
    detail: str
    detected_at: datetime
    first_note: str
    second_note: str
    # "dismiss" or "reset", why, and when; all None while the evidence is open.
    resolution: str | None
    reason: str | None
    resolved_at: datetime | None


class Resolve(msgspec.Struct, frozen=True, kw_only=True):
    """A coordinator's resolution of the open evidence against one log (see docs/federation.md)."""

    origin: str
    action: Literal["dismiss", "reset"]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class Resolved(msgspec.Struct, kw_only=True):
    origin: str
    action: str
    reason: str
    # The evidence this resolved.
    evidence: list[int]


class FederationController(Controller):
    path = "/"
    tags = ("federation",)

    @get("/status", operation_id="federationStatus", guards=[require_reader])
    async def status(self, state: State) -> Status:
        """Per peer: how far its log is replicated and verified, its trust limit, and what was refused."""
        federation: Federation = state.federation
        peers = federation.peers
        async with state.pool.acquire() as conn:
            copies = {replica.origin: replica for replica in await store.replicas(conn)}
            refused = await store.rejections(conn)
            cosigners = await store.cosigners(conn)
            evidence = await store.open_evidence(conn)
            witnessed = {origin: await store.witnessed(conn, origin) for origin in peers}
            out = await store.in_flight_out(conn)
            inbound = _decisions_pending(await store.pending_decisions(conn))
        balances = {origin: await _balance(state.ledger, federation.clearing.get(origin)) for origin in peers}
        replicators = federation.replicators
        return Status(
            origin=state.origin,
            name=state.name,
            witness_key=state.witness_key.to_text(),
            cosigners=[CosignerView(witness=c.witness, size=c.size, cosigned_at=c.cosigned_at) for c in cosigners],
            alerts=[
                AlertView(
                    origin=e.origin,
                    kind=e.kind,
                    detail=e.detail,
                    detected_at=e.detected_at,
                    first_note=e.first_note.decode("utf-8", "replace"),
                    second_note=e.second_note.decode("utf-8", "replace"),
                )
                for e in evidence
            ],
            published_size=state.publisher.published,
            peers=[
                PeerStatus(
                    origin=peer.origin,
                    name=peer.name,
                    replicated_size=copies[peer.origin].tree.size if peer.origin in copies else 0,
                    replicated_at=copies[peer.origin].updated_at if peer.origin in copies else None,
                    lag_entries=replicators[peer.origin].lag_entries,
                    lag_seconds=round(replicators[peer.origin].lag_seconds, 3),
                    last_contact_at=_when(replicators[peer.origin].last_contact_at),
                    witnessed_size=_size(witnessed.get(peer.origin)),
                    trust_limit=peer.trust_limit,
                    # Our payments in flight sit in the clearing account too; only settled ones count as trust.
                    trust_used=max(0, out.get(peer.origin, (0, 0))[1] - balances[peer.origin]),
                    in_flight_out=_flight(out.get(peer.origin)),
                    in_flight_in=_flight(inbound.get(peer.origin)),
                    clearing_account=federation.clearing.get(peer.origin),
                    rejected=[
                        RejectionView(reason=r.reason, count=r.count, last_detail=r.last_detail, last_at=r.last_at)
                        for r in refused
                        if r.origin == peer.origin
                    ],
                )
                for peer in peers.values()
            ],
        )

    @get("/evidence", operation_id="listEvidence", guards=[require_coordinator])
    async def evidence(self, state: State) -> list[EvidenceView]:
        """Every piece of fork evidence kept, open or resolved, oldest first."""
        async with state.pool.acquire() as conn:
            kept = await store.all_evidence(conn)
        return [
            EvidenceView(
                id=e.id,
                origin=e.origin,
                kind=e.kind,
                detail=e.detail,
                detected_at=e.detected_at,
                first_note=e.first_note.decode("utf-8", "replace"),
                second_note=e.second_note.decode("utf-8", "replace"),
                resolution=e.resolution,
                reason=e.reason,
                resolved_at=e.resolved_at,
            )
            for e in kept
        ]

    @post(
        "/evidence/resolutions",
        operation_id="resolveEvidence",
        guards=[require_coordinator],
        status_code=200,
        request_class=StrictRequest,
    )
    async def resolve(self, data: JSONBody[Resolve], state: State) -> Resolved:
        """Resolve the open evidence against one log: ``dismiss`` keeps our copy and resumes, ``reset`` drops our
        copy and our witness's record of the log and replicates it again from its start."""
        federation: Federation = state.federation
        resolved = await federation.resolve(data.origin, data.action, data.reason)
        if not resolved:
            raise NotFound(f"no open evidence against {data.origin}'s log")
        return Resolved(origin=data.origin, action=data.action, reason=data.reason, evidence=resolved)

    @get("/peers/{peer_path:path}", operation_id="getPeerLog")
    async def peer_log(
        self,
        state: State,
        peer_path: FromPath[str],
        start: Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)] = 0,
        end: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
        index: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
        size: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
        old: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
        new: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
    ) -> Response[bytes]:
        """A neighbour's log as we hold it verified, under ``<origin>/log/`` as our ledger serves ours under
        ``/log/``: ``checkpoint`` (its signed note), ``entries?start=&end=`` (at most 1000), ``tile/<L>/<N>[.p/<W>]``
        and ``tile/entries/<N>[.p/<W>]`` (C2SP tlog-tiles), ``proof/inclusion?index=&size=``,
        ``proof/consistency?old=&new=``, ``proof/bundle?index=`` (C2SP tlog-proof), and ``balances`` (replayed
        from the copy's entries)."""
        path = peer_path.strip("/")
        peers: dict[str, Peer] = state.federation.peers
        # The longest origin that the path starts with (an origin may itself end in "/log").
        origin = max((o for o in peers if path.startswith(f"{o}/log/")), key=len, default=None)
        if origin is None:
            raise NotFound(f"no copy of {path.rpartition('/log/')[0] or path!r}'s log is kept here")
        query = copies.Query(start=start, end=end, index=index, size=size, old=old, new=new)
        async with state.pool.acquire() as conn:
            body, media_type = await copies.serve(
                conn, origin, path.removeprefix(f"{origin}/log/"), query, state.federation.copy_balances
            )
        return Response(body, media_type=media_type)


def _flight(counted: tuple[int, int] | None) -> Flight:
    payments, minutes = counted or (0, 0)
    return Flight(payments=payments, minutes=minutes)


def _when(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


async def _balance(ledger: LedgerClient, account: str | None) -> int:
    if account is None:
        return 0
    try:
        return (await ledger.account(account)).balance
    except LedgerError:
        return 0


def _decisions_pending(payloads: list[bytes]) -> dict[str, tuple[int, int]]:
    """Per neighbour: (payments, minutes) of its payments to our members that our ledger has yet to decide."""
    found: dict[str, tuple[int, int]] = {}
    for payload in payloads:
        command = settle.decoder.decode(payload)
        if isinstance(command, settle.Decide):
            payments, minutes = found.get(command.origin, (0, 0))
            found[command.origin] = (payments + 1, minutes + command.minutes)
    return found


def _size(witnessed: store.Witnessed | None) -> int:
    return 0 if witnessed is None else witnessed.size


class WitnessController(Controller):
    """Our witness over HTTP: C2SP tlog-witness, at <federation>/witness/add-checkpoint."""

    path = "/witness"
    tags = ("witness",)

    @post("/add-checkpoint", operation_id="addCheckpoint", status_code=200)
    async def add_checkpoint(self, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
        """Cosign a checkpoint of a log this witness knows, if it is consistent with the last one it cosigned.
        The body and the answers are C2SP tlog-witness's (text, not JSON)."""
        answer = await state.witness.add_checkpoint(await request.body())
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    @get("/logs", operation_id="listWitnessedLogs", guards=[require_reader])
    async def logs(self, state: State) -> WitnessedLogs:
        """The logs our witness cosigns besides our neighbours' (a coordinator named them)."""
        federation: Federation = state.federation
        named = sorted(federation.witnessed_logs.items())
        return WitnessedLogs(logs=[WitnessedLog(origin=origin, key=key.to_text()) for origin, key in named])

    @post(
        "/logs",
        operation_id="addWitnessedLog",
        guards=[require_coordinator],
        status_code=201,
        request_class=StrictRequest,
    )
    async def add_log(self, data: JSONBody[WitnessedLog], state: State) -> WitnessedLog:
        """Have our witness cosign a log (a neighbour's or not): its origin and log key (C2SP vkey text)."""
        federation: Federation = state.federation
        verifier = await federation.witness_log(data.origin, data.key)
        return WitnessedLog(origin=data.origin, key=verifier.to_text())

    @delete("/logs/{origin:path}", operation_id="removeWitnessedLog", guards=[require_coordinator], status_code=204)
    async def remove_log(self, origin: FromPath[str], state: State) -> None:
        """Stop cosigning a log a coordinator named (a neighbour's log is still cosigned while it is a peer)."""
        federation: Federation = state.federation
        if not await federation.unwitness_log(origin.strip("/")):
            raise NotFound(f"no coordinator named the log {origin.strip('/')} for our witness")


class WitnessedLog(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A log our witness cosigns besides our neighbours': its origin and its checkpoints' verifier key."""

    origin: str
    key: str


class WitnessedLogs(msgspec.Struct, kw_only=True):
    logs: list[WitnessedLog]


class PeerView(msgspec.Struct, kw_only=True):
    """A neighbour as configured (its secrets left out)."""

    origin: str
    name: str
    log_key: str
    witness_key: str | None
    nats_url: str
    nats_user: str | None
    trust_limit: int


class Credential(msgspec.Struct, kw_only=True):
    """What the neighbour needs to reach our NATS server: give it to its coordinators (once: it is a secret)."""

    nats_url: str | None
    user: str
    password: str


class PeerAdded(msgspec.Struct, kw_only=True):
    peer: PeerView
    credential: Credential


def _view(peer: Peer) -> PeerView:
    return PeerView(
        origin=peer.origin,
        name=peer.name,
        log_key=peer.log_key.to_text(),
        witness_key=None if peer.witness_key is None else peer.witness_key.to_text(),
        nats_url=peer.nats_url,
        nats_user=peer.nats_user,
        trust_limit=peer.trust_limit,
    )


class PeerController(Controller):
    """Coordinators add and remove neighbours here (and with `timebank peer add|list|remove`)."""

    path = "/peers"
    tags = ("peers",)
    request_class = StrictRequest

    @get("/", operation_id="listPeers", guards=[require_reader])
    async def list_peers(self, state: State) -> list[PeerView]:
        return [_view(peer) for peer in state.federation.peers.values()]

    @post("/", operation_id="addPeer", guards=[require_coordinator], status_code=201)
    async def add_peer(self, data: JSONBody[PeerSettings], state: State) -> PeerAdded:
        """Add a neighbour (or change one), link its clearing account with the trust limit as floor, and let it
        in to our NATS server; without ``issued_password``, a new password is made for it and returned once."""
        configured = (
            data if data.issued_password else msgspec.structs.replace(data, issued_password=secrets.token_urlsafe(24))
        )
        peer = await state.federation.add(configured)
        assert configured.issued_password is not None
        return PeerAdded(
            peer=_view(peer),
            credential=Credential(
                nats_url=state.public_nats_url, user=access.peer_user(peer.name), password=configured.issued_password
            ),
        )

    @delete("/{origin:path}", operation_id="removePeer", guards=[require_coordinator], status_code=204)
    async def remove_peer(self, origin: FromPath[str], state: State) -> None:
        """Stop peering: replication, witnessing and settling with it stop, and its NATS user goes."""
        if not await state.federation.remove(origin.strip("/")):
            raise NotFound(f"{origin.strip('/')} is not a peer")
