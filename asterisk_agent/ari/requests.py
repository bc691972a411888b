"""Every ARI request the worker can make, built as plain data (no I/O).

Each function returns an :class:`AriRequest`; :class:`asterisk_agent.ari.client.AriClient` sends it. Keeping
the building pure lets a test check every request against the ARI specification Asterisk ships.
Only resources that exist since Asterisk 18 are used, unless a function's docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

QueryValue = str | int | bool


@dataclass(frozen=True)
class AriRequest:
    method: str
    template: str  # path relative to /ari, with {placeholders} as in the specification
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, QueryValue] = field(default_factory=dict)
    body: Mapping[str, object] | None = None

    @property
    def path(self) -> str:
        path = self.template
        for name, value in self.path_params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return path

    def query_strings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.query.items():
            if isinstance(value, bool):
                out[name] = "true" if value else "false"
            else:
                out[name] = str(value)
        return out


def _q(**values: QueryValue | None) -> dict[str, QueryValue]:
    return {name: value for name, value in values.items() if value is not None}


def _vars(variables: Mapping[str, str] | None) -> dict[str, object] | None:
    return {"variables": dict(variables)} if variables else None


# --- asterisk, applications -------------------------------------------------------------------------------


def asterisk_info() -> AriRequest:
    return AriRequest("GET", "/asterisk/info")


def asterisk_ping() -> AriRequest:
    return AriRequest("GET", "/asterisk/ping")


def set_global_variable(variable: str, value: str) -> AriRequest:
    """A dialplan global (``[globals]``), e.g. which admission path ``from-trunk`` takes."""
    return AriRequest("POST", "/asterisk/variable", {}, _q(variable=variable, value=value))


def get_global_variable(variable: str) -> AriRequest:
    return AriRequest("GET", "/asterisk/variable", {}, _q(variable=variable))


def list_applications() -> AriRequest:
    return AriRequest("GET", "/applications")


def get_application(name: str) -> AriRequest:
    return AriRequest("GET", "/applications/{applicationName}", {"applicationName": name})


# --- channels ---------------------------------------------------------------------------------------------


def list_channels() -> AriRequest:
    return AriRequest("GET", "/channels")


def get_channel(channel_id: str) -> AriRequest:
    return AriRequest("GET", "/channels/{channelId}", {"channelId": channel_id})


def originate(
    endpoint: str,
    *,
    channel_id: str,
    app: str | None = None,
    app_args: str | None = None,
    context: str | None = None,
    extension: str | None = None,
    priority: int | None = None,
    caller_id: str | None = None,
    timeout_s: int | None = None,
    other_channel_id: str | None = None,
    originator: str | None = None,
    formats: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> AriRequest:
    """Originate a call to ``endpoint``; it lands in ``app`` (with ``app_args``) or in the dialplan."""
    query = _q(
        endpoint=endpoint, channelId=channel_id, app=app, appArgs=app_args, context=context,
        extension=extension, priority=priority, callerId=caller_id, timeout=timeout_s,
        otherChannelId=other_channel_id, originator=originator, formats=formats,
    )
    return AriRequest("POST", "/channels", query=query, body=_vars(variables))


def create_channel(
    endpoint: str,
    *,
    channel_id: str,
    app: str,
    app_args: str | None = None,
    other_channel_id: str | None = None,
    originator: str | None = None,
    formats: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> AriRequest:
    """Create a channel without dialing it (dial with :func:`dial`); it enters ``app`` at once."""
    query = _q(
        endpoint=endpoint, channelId=channel_id, app=app, appArgs=app_args,
        otherChannelId=other_channel_id, originator=originator, formats=formats,
    )
    return AriRequest("POST", "/channels/create", query=query, body=_vars(variables))


def dial(channel_id: str, *, caller: str | None = None, timeout_s: int | None = None) -> AriRequest:
    return AriRequest(
        "POST", "/channels/{channelId}/dial", {"channelId": channel_id}, _q(caller=caller, timeout=timeout_s)
    )


HANGUP_REASONS = (
    "normal", "busy", "congestion", "no_answer", "timeout", "rejected", "unallocated",
    "normal_unspecified", "number_incomplete", "codec_mismatch", "interworking", "failure", "answered_elsewhere",
)


def hangup(channel_id: str, *, reason: str | None = None, reason_code: int | None = None) -> AriRequest:
    if reason is not None and reason not in HANGUP_REASONS:
        raise ValueError(f"unknown hangup reason {reason!r}")
    return AriRequest(
        "DELETE", "/channels/{channelId}", {"channelId": channel_id}, _q(reason=reason, reason_code=reason_code)
    )


def answer(channel_id: str) -> AriRequest:
    return AriRequest("POST", "/channels/{channelId}/answer", {"channelId": channel_id})


def ring(channel_id: str) -> AriRequest:
    return AriRequest("POST", "/channels/{channelId}/ring", {"channelId": channel_id})


def progress(channel_id: str) -> AriRequest:
    """Early media (183 Session Progress). Newer than Asterisk 18: callers fall back to ring when it is absent."""
    return AriRequest("POST", "/channels/{channelId}/progress", {"channelId": channel_id})


def continue_in_dialplan(
    channel_id: str,
    *,
    context: str | None = None,
    extension: str | None = None,
    priority: int | None = None,
    label: str | None = None,
) -> AriRequest:
    return AriRequest(
        "POST",
        "/channels/{channelId}/continue",
        {"channelId": channel_id},
        _q(context=context, extension=extension, priority=priority, label=label),
    )


def send_dtmf(
    channel_id: str,
    dtmf: str,
    *,
    duration_ms: int | None = None,
    between_ms: int | None = None,
    before_ms: int | None = None,
) -> AriRequest:
    if not dtmf or any(digit not in "0123456789ABCD*#" for digit in dtmf):
        raise ValueError(f"not a DTMF string: {dtmf!r}")
    return AriRequest(
        "POST",
        "/channels/{channelId}/dtmf",
        {"channelId": channel_id},
        _q(dtmf=dtmf, duration=duration_ms, between=between_ms, before=before_ms),
    )


def _media_list(media: str | Sequence[str]) -> str:
    uris = [media] if isinstance(media, str) else list(media)
    if not uris or any(not uri or "," in uri for uri in uris):
        raise ValueError(f"media must be one or more URIs without commas: {media!r}")
    return ",".join(uris)


def play_on_channel(
    channel_id: str, media: str | Sequence[str], *, playback_id: str, lang: str | None = None
) -> AriRequest:
    """Play ``media`` (``sound:``, ``digits:``, ``number:``, ``tone:``, ``recording:`` URIs), several in turn
    as one playback when given a list."""
    return AriRequest(
        "POST",
        "/channels/{channelId}/play/{playbackId}",
        {"channelId": channel_id, "playbackId": playback_id},
        _q(media=_media_list(media), lang=lang),
    )


def start_channel_moh(channel_id: str, moh_class: str | None = None) -> AriRequest:
    return AriRequest("POST", "/channels/{channelId}/moh", {"channelId": channel_id}, _q(mohClass=moh_class))


def stop_channel_moh(channel_id: str) -> AriRequest:
    return AriRequest("DELETE", "/channels/{channelId}/moh", {"channelId": channel_id})


def get_channel_variable(channel_id: str, variable: str) -> AriRequest:
    return AriRequest("GET", "/channels/{channelId}/variable", {"channelId": channel_id}, _q(variable=variable))


def set_channel_variable(channel_id: str, variable: str, value: str) -> AriRequest:
    return AriRequest(
        "POST", "/channels/{channelId}/variable", {"channelId": channel_id}, _q(variable=variable, value=value)
    )


SNOOP_DIRECTIONS = ("none", "both", "out", "in")


def snoop(
    channel_id: str, *, snoop_id: str, app: str, app_args: str | None = None, spy: str = "both",
    whisper: str = "none",
) -> AriRequest:
    if spy not in SNOOP_DIRECTIONS or whisper not in SNOOP_DIRECTIONS:
        raise ValueError(f"snoop directions must be one of {SNOOP_DIRECTIONS}")
    return AriRequest(
        "POST",
        "/channels/{channelId}/snoop/{snoopId}",
        {"channelId": channel_id, "snoopId": snoop_id},
        _q(app=app, appArgs=app_args, spy=spy, whisper=whisper),
    )


def external_media(
    *,
    channel_id: str,
    app: str,
    external_host: str,
    media_format: str,
    app_args: str | None = None,
    encapsulation: str = "rtp",
    transport: str = "udp",
    direction: str = "both",
    variables: Mapping[str, str] | None = None,
) -> AriRequest:
    """An externalMedia channel streaming the bridge's audio to ``external_host`` (``host:port``)."""
    query = _q(
        channelId=channel_id, app=app, data=app_args, external_host=external_host, format=media_format,
        encapsulation=encapsulation, transport=transport, direction=direction,
    )
    if direction == "both":
        del query["direction"]  # the parameter is newer than Asterisk 18; both is the default everywhere
    return AriRequest("POST", "/channels/externalMedia", query=query, body=_vars(variables))


def record_channel(
    channel_id: str, *, name: str, media_format: str = "wav", max_duration_s: int | None = None,
    if_exists: str = "fail", beep: bool = False, terminate_on: str = "none",
) -> AriRequest:
    return AriRequest(
        "POST",
        "/channels/{channelId}/record",
        {"channelId": channel_id},
        _q(name=name, format=media_format, maxDurationSeconds=max_duration_s, ifExists=if_exists, beep=beep,
           terminateOn=terminate_on),
    )


# --- bridges ----------------------------------------------------------------------------------------------


BRIDGE_TYPES = ("mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single", "sdp_label")


def list_bridges() -> AriRequest:
    return AriRequest("GET", "/bridges")


def get_bridge(bridge_id: str) -> AriRequest:
    return AriRequest("GET", "/bridges/{bridgeId}", {"bridgeId": bridge_id})


def create_bridge(bridge_id: str, *, bridge_type: str = "mixing", name: str | None = None) -> AriRequest:
    for kind in bridge_type.split(","):
        if kind not in BRIDGE_TYPES:
            raise ValueError(f"unknown bridge type {kind!r}")
    return AriRequest(
        "POST", "/bridges/{bridgeId}", {"bridgeId": bridge_id}, _q(type=bridge_type, name=name)
    )


def destroy_bridge(bridge_id: str) -> AriRequest:
    return AriRequest("DELETE", "/bridges/{bridgeId}", {"bridgeId": bridge_id})


def add_channel_to_bridge(
    bridge_id: str, channel_id: str, *, role: str | None = None, absorb_dtmf: bool | None = None,
    mute: bool | None = None,
) -> AriRequest:
    return AriRequest(
        "POST",
        "/bridges/{bridgeId}/addChannel",
        {"bridgeId": bridge_id},
        _q(channel=channel_id, role=role, absorbDTMF=absorb_dtmf, mute=mute),
    )


def remove_channel_from_bridge(bridge_id: str, channel_id: str) -> AriRequest:
    return AriRequest(
        "POST", "/bridges/{bridgeId}/removeChannel", {"bridgeId": bridge_id}, _q(channel=channel_id)
    )


def start_bridge_moh(bridge_id: str, moh_class: str | None = None) -> AriRequest:
    return AriRequest("POST", "/bridges/{bridgeId}/moh", {"bridgeId": bridge_id}, _q(mohClass=moh_class))


def stop_bridge_moh(bridge_id: str) -> AriRequest:
    return AriRequest("DELETE", "/bridges/{bridgeId}/moh", {"bridgeId": bridge_id})


def play_on_bridge(
    bridge_id: str, media: str | Sequence[str], *, playback_id: str, lang: str | None = None
) -> AriRequest:
    return AriRequest(
        "POST",
        "/bridges/{bridgeId}/play/{playbackId}",
        {"bridgeId": bridge_id, "playbackId": playback_id},
        _q(media=_media_list(media), lang=lang),
    )


def record_bridge(
    bridge_id: str, *, name: str, media_format: str = "wav", max_duration_s: int | None = None,
    if_exists: str = "fail", beep: bool = False, terminate_on: str = "none",
) -> AriRequest:
    return AriRequest(
        "POST",
        "/bridges/{bridgeId}/record",
        {"bridgeId": bridge_id},
        _q(name=name, format=media_format, maxDurationSeconds=max_duration_s, ifExists=if_exists, beep=beep,
           terminateOn=terminate_on),
    )


# --- playbacks and recordings -----------------------------------------------------------------------------


def get_playback(playback_id: str) -> AriRequest:
    return AriRequest("GET", "/playbacks/{playbackId}", {"playbackId": playback_id})


def stop_playback(playback_id: str) -> AriRequest:
    return AriRequest("DELETE", "/playbacks/{playbackId}", {"playbackId": playback_id})


def stop_live_recording(name: str) -> AriRequest:
    return AriRequest("POST", "/recordings/live/{recordingName}/stop", {"recordingName": name})


def cancel_live_recording(name: str) -> AriRequest:
    return AriRequest("DELETE", "/recordings/live/{recordingName}", {"recordingName": name})


def list_stored_recordings() -> AriRequest:
    return AriRequest("GET", "/recordings/stored")


def get_stored_recording_file(name: str) -> AriRequest:
    return AriRequest("GET", "/recordings/stored/{recordingName}/file", {"recordingName": name})


def delete_stored_recording(name: str) -> AriRequest:
    return AriRequest("DELETE", "/recordings/stored/{recordingName}", {"recordingName": name})
