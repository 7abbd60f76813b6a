"""The ledger's HTTP client: every call another service (or a tool) makes to a ledger's API, on httpx.

Every call either returns the ledger's answer as a Struct, or raises one of two errors that tell the caller what
to do next: ``LedgerRefused`` (the ledger looked at the request and said no; sending it again will not help) or
``LedgerUnavailable`` (no answer, a timeout or a server error; send it again later with the same key, which the
ledger deduplicates). The answer Structs are tolerant: a newer ledger may add fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import msgspec

from services.ledger.client_http import LedgerError, LedgerHttp, LedgerRefused, LedgerUnavailable
from services.ledger.client_types import (
    AcceptanceOutcomes,
    AcceptanceRequest,
    AccountView,
    Balances,
    Checkpoints,
    ConsistencyProof,
    CosignaturesRequest,
    DecideManyRequest,
    DecideRequest,
    DecisionOutcomes,
    Entries,
    InclusionProof,
    LedgerStatus,
    LimitsRequest,
    OpenAccountRequest,
    OpenedAccount,
    OpenedAccountBody,
    PostedTransfer,
    RecordedAcceptance,
    RecordManyRequest,
    RemoteDecision,
    ReverseRejectedRequest,
    ReverseRequest,
    SignedCheckpoint,
    StatementLine,
    StatementPage,
    TransferRequest,
)
from shared import tiles

AccountKind = Literal["member", "community"]
# A peer account is a neighbour network's clearing account, opened by the federation, not the exchange.
AnyAccountKind = Literal["member", "community", "peer"]

__all__ = [
    "AcceptanceRequest",
    "AccountKind",
    "AccountView",
    "AnyAccountKind",
    "Balances",
    "Checkpoints",
    "ConsistencyProof",
    "DecideRequest",
    "Entries",
    "InclusionProof",
    "LedgerClient",
    "LedgerError",
    "LedgerRefused",
    "LedgerStatus",
    "LedgerUnavailable",
    "OpenedAccount",
    "PostedTransfer",
    "RecordedAcceptance",
    "RemoteDecision",
    "SignedCheckpoint",
    "StatementLine",
    "StatementPage",
]

_T = TypeVar("_T")


_account_body = msgspec.json.Decoder(OpenedAccountBody)
_posted_transfer = msgspec.json.Decoder(PostedTransfer)
_account_view = msgspec.json.Decoder(AccountView)
_statement_page = msgspec.json.Decoder(StatementPage)
_ledger_status = msgspec.json.Decoder(LedgerStatus)
_remote_decision = msgspec.json.Decoder(RemoteDecision)
_decision_outcomes = msgspec.json.Decoder(DecisionOutcomes)
_acceptance_outcomes = msgspec.json.Decoder(AcceptanceOutcomes)
_entries = msgspec.json.Decoder(Entries)
_checkpoints = msgspec.json.Decoder(Checkpoints)
_inclusion = msgspec.json.Decoder(InclusionProof)
_consistency = msgspec.json.Decoder(ConsistencyProof)
_balances = msgspec.json.Decoder(Balances)
_recorded_acceptance = msgspec.json.Decoder(RecordedAcceptance)


def _segment(value: str) -> str:
    """``value`` as one path segment, whatever it holds."""
    return quote(value, safe="")


class LedgerClient(LedgerHttp):
    """Async client for one ledger: every call of its API. Owns one ``httpx.AsyncClient``: ``start()``/``close()``,
    or ``async with`` (see ``LedgerHttp``)."""

    # ---- Commands (idempotent by key, or by their nature) ----

    async def open_account(
        self,
        key: str,
        kind: AnyAccountKind = "member",
        floor: int | None = None,
        ceiling: int | None = None,
        *,
        peer: str | None = None,
    ) -> OpenedAccount:
        """Open an account for ``key``; the same key (with the same request) answers with the same account.

        ``floor=None`` takes the ledger's default (the network's member floor, or 0 for the community pot).
        ``peer``: the neighbour's origin, for a ``peer`` (clearing) account.
        """
        body = OpenAccountRequest(key=key, kind=kind, floor=floor, ceiling=ceiling, peer=peer)
        status, data = await self._request("POST", "/accounts", body=body)
        opened = self._decode(_account_body, data)
        return OpenedAccount(
            account=opened.id,
            kind=opened.kind,
            floor=opened.floor,
            ceiling=opened.ceiling,
            index=opened.opened_index,
            owner_token=opened.owner_token,
            replayed=status == 200,
        )

    async def change_limits(self, account_id: str, floor: int, ceiling: int | None = None) -> AccountView:
        """Set the account's floor and ceiling (``None``: no ceiling); answers with the account as it now is."""
        body = LimitsRequest(floor=floor, ceiling=ceiling)
        _, data = await self._request("PUT", f"/accounts/{_segment(account_id)}/limits", body=body)
        return self._decode(_account_view, data)

    async def close_account(self, account_id: str) -> AccountView:
        """Close the account (its balance must be zero); closing a closed account is refused."""
        _, data = await self._request("POST", f"/accounts/{_segment(account_id)}/close")
        return self._decode(_account_view, data)

    async def transfer(
        self,
        key: str,
        payer: str,
        payee: str,
        minutes: int,
        memo_digest: str | None = None,
        exchange_ref: str | None = None,
        remote_payee: str | None = None,
    ) -> PostedTransfer:
        """Post ``minutes`` from ``payer`` to ``payee`` once per key; a repeat answers with the original transfer.

        ``remote_payee``: when ``payee`` is a neighbour's clearing account, the account to be paid over there.
        """
        body = TransferRequest(
            key=key,
            payer=payer,
            payee=payee,
            minutes=minutes,
            memo_digest=memo_digest,
            exchange_ref=exchange_ref,
            remote_payee=remote_payee,
        )
        _, data = await self._request("POST", "/transfers", body=body)
        return self._decode(_posted_transfer, data)

    async def reverse(self, key: str, transfer_id: str) -> PostedTransfer:
        """Post the transfer that undoes ``transfer_id``, once per key; a repeat answers with the original."""
        _, data = await self._request(
            "POST", f"/transfers/{_segment(transfer_id)}/reversal", body=ReverseRequest(key=key)
        )
        return self._decode(_posted_transfer, data)

    async def decide_remote(
        self, origin: str, transfer: str, index: int, payee: str, minutes: int, memo_digest: str | None = None
    ) -> RemoteDecision:
        """Have this ledger decide a neighbour's transfer to one of its accounts (accept or reject, once)."""
        body = DecideRequest(
            origin=origin, transfer=transfer, index=index, payee=payee, minutes=minutes, memo_digest=memo_digest
        )
        _, data = await self._request("POST", "/crossnet/decisions", body=body)
        return self._decode(_remote_decision, data)

    async def decide_remote_many(self, decisions: list[DecideRequest]) -> list[RemoteDecision | LedgerRefused]:
        """Have this ledger decide many neighbours' transfers in one request: per transfer, its decision, or the
        refusal ``decide_remote`` would have raised (the others are decided all the same)."""
        _, data = await self._request("POST", "/crossnet/decisions/batch", body=DecideManyRequest(decisions=decisions))
        outcomes = self._decode(_decision_outcomes, data).results
        return _each(len(decisions), [(o.decision, o.status, o.problem) for o in outcomes])

    # ---- Reads ----

    async def remote_decision(self, origin: str, transfer: str) -> RemoteDecision:
        """This ledger's decision on ``origin``'s ``transfer`` (``LedgerRefused`` 404 while undecided)."""
        # The origin may hold slashes: the route takes the rest of the path and splits at the last one.
        path = "/".join(_segment(part) for part in origin.split("/"))
        _, data = await self._request("GET", f"/crossnet/decisions/{path}/{_segment(transfer)}")
        return self._decode(_remote_decision, data)

    async def account(self, account_id: str, at_size: int | None = None) -> AccountView:
        """The account's limits and balance (after the first ``at_size`` log entries, if given)."""
        params = {} if at_size is None else {"at_size": str(at_size)}
        _, data = await self._request("GET", f"/accounts/{_segment(account_id)}", params=params)
        return self._decode(_account_view, data)

    async def statement(self, account_id: str, *, before: int | None = None, limit: int = 50) -> StatementPage:
        """One page (newest first) of the account's postings with a log index below ``before``."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        _, data = await self._request("GET", f"/accounts/{_segment(account_id)}/statement", params=params)
        return self._decode(_statement_page, data)

    async def statement_lines(self, account_id: str, *, page_size: int = 200) -> AsyncIterator[StatementLine]:
        """Every line of the account's statement, newest first, reading page after page."""
        before: int | None = None
        while True:
            page = await self.statement(account_id, before=before, limit=page_size)
            for line in page.lines:
                yield line
            if page.next_before is None:
                return
            before = page.next_before

    async def ready(self) -> LedgerStatus:
        """The ledger's readiness (it can reach its database) and its log size."""
        _, data = await self._request("GET", "/ready")
        return self._decode(_ledger_status, data)

    async def checkpoint(self) -> bytes:
        """The latest signed checkpoint note, as served (with any witness cosignatures appended)."""
        _, data = await self._request("GET", "/log/checkpoint")
        return data

    async def add_cosignatures(self, size: int, lines: list[str]) -> None:
        """Give the ledger witnesses' cosignature lines on its checkpoint of ``size`` (the federation's token)."""
        await self._request("POST", "/log/cosignatures", body=CosignaturesRequest(size=size, signatures=lines))

    async def checkpoints(self, after: int, limit: int = 100, *, wait: float = 0.0) -> list[SignedCheckpoint]:
        """The signed checkpoints of sizes above ``after``, oldest first (one per committed batch); with ``wait``
        (seconds, less than the client's timeout), the ledger holds an empty answer until the log grows or the
        wait is over."""
        params = {"after": str(after), "limit": str(limit)}
        if wait > 0:
            params["wait"] = f"{wait:.3f}"
        _, data = await self._request("GET", "/log/checkpoints", params=params)
        return self._decode(_checkpoints, data).checkpoints

    async def entries(self, start: int, end: int | None = None) -> Entries:
        """Log entries from ``start`` (up to ``end``, at most 1000 per call) as the exact stored bytes."""
        params = {"start": str(start)} if end is None else {"start": str(start), "end": str(end)}
        _, data = await self._request("GET", "/log/entries", params=params)
        return self._decode(_entries, data)

    async def entry_bundle(self, index: int, width: int = tiles.TILE_WIDTH) -> list[bytes]:
        """The entries of C2SP entry bundle ``index`` (entries 256*index..), ``width`` of them (a partial bundle
        when fewer than 256): the exact stored bytes, read in one binary response."""
        _, data = await self._request("GET", "/log/" + tiles.entries_path(index, width))
        try:
            return tiles.split_entry_bundle(data)
        except ValueError as exc:
            raise LedgerUnavailable(f"the ledger sent a malformed entry bundle {index}: {exc}") from None

    async def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        """The proof that entry ``index`` is in the tree of the first ``size`` entries."""
        _, data = await self._request("GET", "/log/proof/inclusion", params={"index": str(index), "size": str(size)})
        return self._decode(_inclusion, data)

    async def consistency_proof(self, old: int, new: int) -> ConsistencyProof:
        """The proof that the tree of ``old`` entries is a prefix of the tree of ``new`` entries."""
        _, data = await self._request("GET", "/log/proof/consistency", params={"old": str(old), "new": str(new)})
        return self._decode(_consistency, data)

    async def proof_bundle(self, index: int) -> str:
        """A C2SP tlog-proof for entry ``index``, to keep and verify offline."""
        _, data = await self._request("GET", "/log/proof/bundle", params={"index": str(index)})
        return data.decode()

    async def balances(self) -> Balances:
        """Every account's balance at one log size, read in one snapshot."""
        _, data = await self._request("GET", "/log/balances")
        return self._decode(_balances, data)

    # ---- Cross-network settlement (the federation's credential) ----

    async def record_acceptance(self, origin: str, transfer: str, index: int) -> RecordedAcceptance:
        """Record the neighbour ``origin``'s acceptance (entry ``index`` of its log) of our ``transfer``, once."""
        body = AcceptanceRequest(origin=origin, transfer=transfer, index=index)
        _, data = await self._request("POST", "/crossnet/acceptances", body=body)
        return self._decode(_recorded_acceptance, data)

    async def record_acceptances(
        self, acceptances: list[AcceptanceRequest]
    ) -> list[RecordedAcceptance | LedgerRefused]:
        """``record_acceptance`` for many in one request: per acceptance, its record, or the refusal it would have
        raised (the others are recorded all the same)."""
        _, data = await self._request(
            "POST", "/crossnet/acceptances/batch", body=RecordManyRequest(acceptances=acceptances)
        )
        outcomes = self._decode(_acceptance_outcomes, data).results
        return _each(len(acceptances), [(o.acceptance, o.status, o.problem) for o in outcomes])

    async def reverse_rejected(self, key: str, origin: str, transfer: str, index: int) -> PostedTransfer:
        """Reverse our ``transfer``, which ``origin`` rejected (entry ``index`` of its log), once per key."""
        body = ReverseRejectedRequest(key=key, origin=origin, transfer=transfer, index=index)
        _, data = await self._request("POST", "/crossnet/reversals", body=body)
        return self._decode(_posted_transfer, data)


def _each(asked: int, outcomes: list[tuple[_T | None, int, dict[str, Any] | None]]) -> list[_T | LedgerRefused]:
    """A batch's outcomes, one per command asked for: what was done, or the refusal of that one command."""
    if len(outcomes) != asked:
        raise LedgerUnavailable(f"the ledger answered {len(outcomes)} outcomes for {asked} commands")
    return [
        done if done is not None else LedgerRefused(status, problem or {"status": status})
        for done, status, problem in outcomes
    ]
