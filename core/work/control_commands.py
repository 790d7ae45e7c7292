"""The control service's ``work`` command (submit, list, status, results, cancel, release,
and the mesh extensions ``release-matching`` and ``verify``).

A kernel plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``); replies and
texts follow Receptor exactly (see docs/compatibility.md for the deliberate differences).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from mesh import hookimpl
from mesh.config.duration import DurationError, parse_go_duration
from mesh.control.protocol import CommandError, Request, encode_error, encode_reply
from mesh.control.server import STREAMED, CommandContext, ControlConn
from mesh.net.stream_errors import StreamError
from mesh.work.release_policy import SUBCOMMAND as RELEASE_MATCHING
from mesh.work.params import split_params
from mesh.work.release_policy import parse_request, release_matching
from mesh.work.unitstore import UnitStoreError
from mesh.work.workceptor import CHUNK, PayloadRejected, Workceptor, redact
from mesh.work.worktype import WorkError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterControlCommand

UNIT_COMMANDS = ("status", "cancel", "release", "force-release", "verify")
#: How long the rest of a rejected payload is read and dropped before the ERROR reply.
DISCARD_TIMEOUT = 60.0


def _workceptor(ctx: CommandContext) -> Workceptor:
    return ctx.node.work


def _unit_arg(request: Request, words: list[str], sub: str) -> str:
    if request.is_json:
        unit_id = request.params.get("unitid")
    else:
        if len(words) > 1:
            raise CommandError(f"work {sub} does not take parameters after the unit ID")
        unit_id = words[0] if words else None
    if not isinstance(unit_id, str) or not unit_id:
        raise CommandError(f"work {sub} needs a unit ID")
    return unit_id


async def work_command(ctx: CommandContext, request: Request) -> Any:
    if request.is_json:
        sub, words = request.params.get("subcommand"), []
        if not isinstance(sub, str):
            raise CommandError("bad command")
    else:
        parts = request.args.split(" ") if request.args else []
        parts = [p for p in parts if p != ""] if parts[:1] != ["submit"] else parts
        if not parts:
            raise CommandError("bad command")
        sub, words = parts[0].lower(), parts[1:]
    wc = _workceptor(ctx)
    try:
        if sub == "submit":
            return await _submit(ctx, request, words)
        if sub == "list":
            unit_id = request.params.get("unitid") if request.is_json else \
                (words[0] if words else None)
            return wc.list(unit_id or None)
        if sub == "results":
            return await _results(ctx, request, words)
        if sub == RELEASE_MATCHING:
            selection = parse_request(request.params if request.is_json else None, words)
            report = await release_matching(wc, selection,
                                            authorize=lambda wt: _refusal(ctx, wt, request))
            return report.reply()
        if sub in UNIT_COMMANDS:
            unit_id = _unit_arg(request, words, sub)
            if sub == "status":
                return redact(wc.status(unit_id))
            if sub == "verify":  # read-only, as status
                digest = await wc.verify(unit_id)
                return {"verified": unit_id, "size": digest.size, "sha256": digest.sha256}
            if wc.store.exists(unit_id):
                try:
                    work_type = wc.status(unit_id).work_type
                except UnitStoreError:
                    if sub != "force-release":
                        raise
                    work_type = ""  # a damaged status: force-release may remove it
                check_signature(ctx, work_type, request)
            if sub == "cancel":
                return await wc.cancel(unit_id)
            return await wc.release(unit_id, force=sub == "force-release")
    except (WorkError, UnitStoreError) as exc:
        raise CommandError(str(exc)) from None
    raise CommandError("bad command")


def check_signature(ctx: CommandContext, work_type_name: str, request: Request) -> None:
    """Verify the request's ``signature`` for work types with ``verifysignature``.

    Better than Receptor: Unix-socket clients are verified too unless the verifier is
    configured with ``verifyunixsocket: false``, and a token must be RS512 with ``exp``.
    """
    signature = request.params.get("signature", "") if request.is_json else ""
    work_type = ctx.node.work.work_types.get(work_type_name)
    if work_type is None or not work_type.verify_signature:
        if signature:
            raise CommandError("work type did not expect a signature")
        return
    verifier = ctx.node.verifier
    if verifier is None:
        raise CommandError("work type requires a signature but this node has no "
                           "work-verification key")
    if ctx.conn.kind == "unix" and not verifier.verify_unix_socket:
        return
    if not isinstance(signature, str) or not signature:
        raise CommandError(f"work type {work_type_name} requires signed work (submit with "
                           f"signwork from a node with a work-signing key)")
    try:
        verifier.verify(signature, ctx.node.node_id)
    except Exception as exc:
        raise CommandError(f"could not verify signature: {exc}") from None


def _refusal(ctx: CommandContext, work_type_name: str, request: Request) -> str | None:
    """Why a bulk release may not release a unit of this work type (None: it may).

    Only work types with ``verifysignature`` are checked: a signature in the request must
    not make every other unit an error.
    """
    work_type = ctx.node.work.work_types.get(work_type_name)
    if work_type is None or not work_type.verify_signature:
        return None
    try:
        check_signature(ctx, work_type_name, request)
    except CommandError as exc:
        return str(exc)
    return None


def _unknown_work_type(ctx: CommandContext, work_type: str) -> str:
    """The error for a local submit of a work type this node lacks.

    Receptor's text (``unknown work type X``), plus, when other nodes advertise the work
    type, which ones and that ``--node`` (receptorctl's and mesh's option; ``node`` in the
    JSON request) sends the unit there.
    """
    message = f"unknown work type {work_type}"
    nodes = sorted({ad.node_id for ad in ctx.node.netceptor.advertisements()
                    if ad.node_id != ctx.node.node_id
                    and any(cmd.work_type == work_type for cmd in ad.work_commands or ())})
    if not nodes:
        return message
    if len(nodes) == 1:
        return (f"{message} on {ctx.node.node_id}; node {nodes[0]} advertises it: "
                f"submit with --node {nodes[0]}")
    return (f"{message} on {ctx.node.node_id}; nodes {', '.join(nodes)} advertise it: "
            f"submit with --node and one of them")


def _submit_params(request: Request, words: list[str]) -> dict[str, str]:
    if request.is_json:
        params = dict(request.params)
        for key, value in params.items():
            if not isinstance(value, str) and key not in ("command", "subcommand"):
                raise CommandError(f"submit parameters must all be strings and {key} is not")
        return params
    if len(words) < 2:
        raise CommandError("work submit needs a node and a work type")
    params = {"node": words[0], "worktype": words[1]}
    if len(words) > 2:
        params["params"] = " ".join(words[2:])
    return params


async def _submit(ctx: CommandContext, request: Request, words: list[str]) -> Any:
    wc = _workceptor(ctx)
    params = _submit_params(request, words)
    node, work_type = params.get("node", ""), params.get("worktype", "")
    if not node or not work_type:
        raise CommandError("work submit needs both node and worktype")
    work_params = split_params(params)
    ttl: float | None = None
    if params.get("ttl"):
        try:
            ttl = parse_go_duration(params["ttl"])
        except DurationError as exc:
            raise CommandError(f"bad ttl: {exc}") from None
    signwork = params.get("signwork", "false").lower() == "true"
    if wc.is_local(node):
        if ttl is not None:
            raise CommandError("ttl option is intended for remote work only")
        if signwork:
            raise CommandError("signwork is intended for remote work only")
        check_signature(ctx, work_type, request)
        if work_type not in wc.work_types:
            raise CommandError(_unknown_work_type(ctx, work_type))
        unit_id = wc.create_local(work_type, work_params)
    else:
        tlsclient = params.get("tlsclient", "")
        if tlsclient:
            try:
                ctx.node.tls_config("client", tlsclient)
            except Exception as exc:  # unknown name, or no TLS plugin
                raise CommandError(f"bad tlsclient: {exc}") from None
        if not tlsclient and any(k.lower().startswith("secret_") for k in work_params):
            raise CommandError("cannot send secrets over a non-TLS connection")
        if signwork and ctx.node.signer is None:
            raise CommandError("signwork needs a work-signing section, which this node lacks")
        unit_id = wc.remote.create(node, work_type, work_params, tlsclient=tlsclient, ttl=ttl,
                                   signwork=signwork)
    conn = ctx.conn
    conn.write(f"Work unit created with ID {unit_id}. Send stdin data and EOF.\n".encode())
    await conn.drain()
    if not await _receive_payload(wc, conn, unit_id):
        return STREAMED
    try:
        if wc.is_local(node):
            await wc.start_local(unit_id, work_params)
            result = "Job Started"
        else:
            result = await wc.remote.submit(unit_id)
    except WorkError as exc:
        raise CommandError(str(exc)) from None
    conn.write(encode_reply({"result": result, "unitid": unit_id}))
    await conn.drain()
    return STREAMED


async def _receive_payload(wc: Workceptor, conn: ControlConn, unit_id: str) -> bool:
    """Store the client's payload; False (and the unit Failed with why) if it did not arrive.

    A payload over ``maxpayload`` or one the disk cannot hold is read to its end and
    discarded (bounded by :data:`DISCARD_TIMEOUT`) so the client can read the ERROR line;
    the session then ends, so no payload byte is ever taken for a command.
    """
    try:
        size = await wc.receive_payload(unit_id, conn.read)
    except PayloadRejected as exc:
        wc.fail(unit_id, f"Error receiving payload: {exc}")
        await _discard(conn)
        conn.write(encode_error(str(exc)))  # and end the session: the rest was payload
        await conn.drain()
        return False
    except (ConnectionError, OSError, StreamError) as exc:
        wc.fail(unit_id, f"Error receiving payload: {exc or type(exc).__name__}")
        return False
    if conn.peer_closed():
        wc.fail(unit_id, f"Error receiving payload: the client disconnected before the "
                         f"payload was complete ({size} bytes received)")
        return False
    return True


async def _discard(conn: ControlConn) -> None:
    """Read and drop what the client still sends, until EOF or :data:`DISCARD_TIMEOUT`."""
    async def drop() -> None:
        while await conn.read(CHUNK):
            pass
    try:
        async with asyncio.timeout(DISCARD_TIMEOUT):
            await drop()
    except (asyncio.TimeoutError, ConnectionError, OSError, StreamError):
        pass


async def _results(ctx: CommandContext, request: Request, words: list[str]) -> Any:
    wc = _workceptor(ctx)
    if request.is_json:
        unit_id, start = request.params.get("unitid"), request.params.get("startpos", 0)
    else:
        if len(words) > 2:
            raise CommandError("work results takes a unit ID and an optional start position")
        unit_id = words[0] if words else None
        start = words[1] if len(words) > 1 else 0
    if not isinstance(unit_id, str) or not unit_id:
        raise CommandError("work results needs a unit ID")
    try:
        startpos = int(start)
    except (TypeError, ValueError):
        raise CommandError(f"bad start position {start!r}") from None
    if startpos < 0:
        raise CommandError("start position must not be negative")
    check_signature(ctx, wc.status(unit_id).work_type, request)  # unknown unit → error
    conn = ctx.conn
    conn.write(f"Streaming results for work unit {unit_id}\n".encode())
    await conn.drain()
    await wc.stream_results(unit_id, startpos, conn.write, conn.drain)
    conn.write_eof()
    return STREAMED


@hookimpl
def mesh_register_control_commands(register: RegisterControlCommand) -> None:
    register("work", work_command)
