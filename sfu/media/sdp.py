"""SDP text munging around aiortc's descriptions (RFC 8866 lines, RFC 8285 extmap, RFC 4588 rtx).

aiortc writes the SDP; we adjust what it cannot express: one codec per published m-section (no RTX
from publishers: plain retransmissions are simpler to route), every header extension the server
forwards (aiortc only keeps the ones it parses itself), the server's fixed extension ids towards
subscribers, per-feed msid, and Chrome's start bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.media.rtp import ROUTER_EXTENSION_IDS, SUBSCRIBER_EXTENSIONS, URI_ABS_SEND_TIME
from sfu.media.twcc import TRANSPORT_CC_ID, URI_TRANSPORT_CC

START_BITRATE_KBPS = 1500
MAX_LAYERS = 3  # PROTOCOL.md: up to three rids per video m-section


@dataclass(slots=True)
class MediaSection:
    """What the packet path needs from one audio/video m-section."""

    mid: str
    kind: str
    port: int
    direction: str
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (mime, clock rate)
    fmtp: dict[int, str] = field(default_factory=dict)
    extmap: dict[str, int] = field(default_factory=dict)  # uri -> id
    ssrcs: list[int] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)  # RFC 8851 a=rid, in offer order (lowest first)
    rid_params: dict[str, dict[str, str]] = field(default_factory=dict)  # rid -> {max-width: ..}

    @property
    def sending(self) -> bool:
        """True if the offerer sends media in this section."""
        return self.port != 0 and self.direction in ("sendonly", "sendrecv")


def split(sdp: str) -> tuple[list[str], list[list[str]]]:
    """(session lines, one list of lines per m-section)."""
    session: list[str] = []
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if not line:
            continue
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def join(session: list[str], sections: list[list[str]]) -> str:
    return "\r\n".join([*session, *(line for lines in sections for line in lines)]) + "\r\n"


def parse_section(lines: list[str]) -> MediaSection:
    m = lines[0][2:].split()
    kind, port = m[0], int(m[1])
    pts = [int(x) for x in m[3:] if x.isdigit()]
    section = MediaSection(mid="", kind=kind, port=port, direction="sendrecv", payload_types=pts)
    fid: list[int] = []
    for line in lines[1:]:
        key, _, value = line[2:].partition(":")
        if line in ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"):
            section.direction = line[2:]
        elif key == "mid":
            section.mid = value.strip()
        elif key == "rtpmap":
            pt, _, desc = value.partition(" ")
            name, _, rest = desc.partition("/")
            clock = rest.split("/")[0]
            section.rtpmap[int(pt)] = (f"{kind}/{name}", int(clock) if clock.isdigit() else 0)
        elif key == "fmtp":
            pt, _, params = value.partition(" ")
            section.fmtp[int(pt)] = params
        elif key == "extmap":
            ext_id, _, uri = value.partition(" ")
            section.extmap[uri.split()[0]] = int(ext_id.split("/")[0])
        elif key == "ssrc":
            ssrc = int(value.split()[0])
            if ssrc not in section.ssrcs:
                section.ssrcs.append(ssrc)
        elif key == "ssrc-group" and value.startswith("FID"):
            fid = [int(x) for x in value.split()[1:]]
        elif key == "rid":
            _add_rid(section, value.split())
    if len(fid) == 2 and fid[1] in section.ssrcs:  # RFC 4588 FID: keep the media SSRC only
        section.ssrcs.remove(fid[1])
    return section


def _add_rid(section: MediaSection, parts: list[str]) -> None:
    """RFC 8851 section 4: `a=rid:<id> send [max-width=..;max-height=..]`."""
    if len(parts) >= 2 and parts[1] == "send" and parts[0] not in section.rids:
        section.rids.append(parts[0])
        section.rid_params[parts[0]] = _fmtp_params(parts[2] if len(parts) > 2 else "")


def _fmtp_params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            out[key] = value
    return out


def parse(sdp: str) -> list[MediaSection]:
    return [parse_section(lines) for lines in split(sdp)[1]]


def _is_rtx(section: MediaSection, pt: int) -> bool:
    return section.rtpmap.get(pt, ("", 0))[0].lower().endswith("/rtx")


def rtx_payload_type(section: MediaSection, payload_type: int) -> int:
    """The RFC 4588 RTX payload type whose `apt` is `payload_type` in this section, or -1."""
    for pt, params in section.fmtp.items():
        if _is_rtx(section, pt) and f"apt={payload_type}" in params.replace(" ", "").split(";"):
            return pt
    return -1


def _keep_payload_types(lines: list[str], keep: list[int]) -> list[str]:
    m = lines[0].split()
    out = [" ".join([*m[:3], *(str(pt) for pt in keep)])]
    for line in lines[1:]:
        key, _, value = line[2:].partition(":")
        if key in ("rtpmap", "fmtp", "rtcp-fb"):
            pt = value.split(" ", 1)[0]
            if pt != "*" and int(pt) not in keep:
                continue
        out.append(line)
    return out


def _set_extmaps(lines: list[str], extmaps: list[tuple[int, str]]) -> list[str]:
    out = [line for line in lines if not line.startswith("a=extmap:")]
    at = next((i for i, line in enumerate(out) if line.startswith("a=rtpmap:")), len(out))
    out[at:at] = [f"a=extmap:{ext_id} {uri}" for ext_id, uri in extmaps]
    return out


def _add_fmtp(lines: list[str], pt: int, param: str) -> list[str]:
    for i, line in enumerate(lines):
        if line.startswith(f"a=fmtp:{pt} "):
            lines[i] = f"{line};{param}"
            return lines
    at = next(i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{pt} ")) + 1
    lines.insert(at, f"a=fmtp:{pt} {param}")
    return lines


def munge_publisher_answer(answer: str, offer: str) -> tuple[str, dict[str, MediaSection]]:
    """Keeps one codec per m-section and the offer's ids for every extension the server forwards.

    Returns the answer to send and, per sending mid, the section as the packet path sees it: the one
    payload type, the publisher's extension ids and the SSRCs announced in the offer.
    """
    offered = {s.mid: s for s in parse(offer)}
    session, sections = split(answer)
    media: dict[str, MediaSection] = {}
    for index, lines in enumerate(sections):
        section = parse_section(lines)
        if section.kind not in ("audio", "video") or section.port == 0:
            continue
        codec_pts = [pt for pt in section.payload_types if not _is_rtx(section, pt)]
        if not codec_pts:
            continue
        pt = codec_pts[0]
        lines = _keep_payload_types(lines, [pt])
        source = offered.get(section.mid)
        ext = (
            [] if source is None else [(i, u) for u, i in source.extmap.items() if u in ROUTER_EXTENSION_IDS]
        )
        lines = _set_extmaps(lines, sorted(ext))
        if source is not None and section.rtpmap.get(pt, ("", 0))[0].lower() == "video/vp9":
            lines = _mirror_vp9_profile(lines, pt, source.fmtp.get(pt, ""))
        if section.kind == "video":
            lines = _add_fmtp(lines, pt, f"x-google-start-bitrate={START_BITRATE_KBPS}")
        rids = _simulcast_rids(source)
        if rids:
            lines = _accept_simulcast(lines, rids)
        sections[index] = lines
        if source is not None and source.sending:
            kept = parse_section(lines)
            kept.extmap = dict((u, i) for i, u in ext)
            kept.ssrcs = source.ssrcs
            kept.rids = rids
            kept.rid_params = {rid: source.rid_params.get(rid, {}) for rid in rids}
            media[kept.mid] = kept
    return join(session, sections), media


def _mirror_vp9_profile(lines: list[str], pt: int, offered_fmtp: str) -> list[str]:
    """The answer's VP9 fmtp says the profile-id the publisher offered for `pt` (RFC 9628 section 6).

    aiortc matches VP9 by name only, so its answer may carry another profile's parameters; we never
    decode, so the publisher's own profile is the one to accept (absent means profile 0).
    """
    profile = _fmtp_params(offered_fmtp).get("profile-id", "0")
    out = [line for line in lines if not line.startswith(f"a=fmtp:{pt} ")]
    return _add_fmtp(out, pt, f"profile-id={profile}")


def _simulcast_rids(source: MediaSection | None) -> list[str]:
    """The rids a simulcast video offer sends (at most MAX_LAYERS, lowest first), or [] if none."""
    if source is None or source.kind != "video" or not source.sending or len(source.rids) < 2:
        return []
    return source.rids[:MAX_LAYERS]


def _accept_simulcast(lines: list[str], rids: list[str]) -> list[str]:
    """RFC 8853 section 5.3 answer: `a=rid:X recv` per layer and `a=simulcast:recv` (RFC 8851 4)."""
    out = [line for line in lines if not line.startswith(("a=rid:", "a=simulcast:"))]
    out += [f"a=rid:{rid} recv" for rid in rids]
    out.append("a=simulcast:recv " + ";".join(rids))
    return out


@dataclass(frozen=True, slots=True)
class OfferedSlot:
    """How the server describes one subscriber m-section."""

    kind: str
    stream_id: str
    track_id: str


def munge_subscriber_offer(offer: str, slots: dict[str, OfferedSlot]) -> str:
    """Server-fixed extension ids (the same for every subscriber) and per-feed msid on our m-sections."""
    session, sections = split(offer)
    for index, lines in enumerate(sections):
        section = parse_section(lines)
        slot = slots.get(section.mid)
        if slot is None:
            continue
        ext = [(ROUTER_EXTENSION_IDS[uri], uri) for uri in SUBSCRIBER_EXTENSIONS[slot.kind]]
        lines = _set_extmaps(lines, [*ext, (TRANSPORT_CC_ID, URI_TRANSPORT_CC)])
        lines = _add_transport_cc_feedback(lines, section)
        lines = [f"a=msid:{slot.stream_id} {slot.track_id}" if x.startswith("a=msid:") else x for x in lines]
        sections[index] = lines
    return join(session, sections)


def _add_transport_cc_feedback(lines: list[str], section: MediaSection) -> list[str]:
    """`a=rtcp-fb:<pt> transport-cc` per codec (not RTX) after its rtpmap (draft-holmer-rmcat-transport-
    wide-cc-extensions-01 section 4); the feedback is per transport, so every m-section offers it."""
    out = [line for line in lines if not line.endswith(" transport-cc")]
    for pt in section.payload_types:
        if _is_rtx(section, pt) or pt not in section.rtpmap:
            continue
        at = next(i for i, line in enumerate(out) if line.startswith(f"a=rtpmap:{pt} ")) + 1
        out.insert(at, f"a=rtcp-fb:{pt} transport-cc")
    return out


def congestion_control_ids(answer_sdp: str) -> tuple[int, int]:
    """(abs-send-time id, transport-cc id) a subscriber's answer accepted, 0 for each one it did not.
    abs-send-time counts on a video m-section (REMB); transport-cc only with its feedback answered too
    (`a=rtcp-fb:<pt> transport-cc`)."""
    abs_id = twcc_id = 0
    for lines in split(answer_sdp)[1]:
        section = parse_section(lines)
        if section.port == 0:
            continue
        if section.kind == "video":
            abs_id = abs_id or section.extmap.get(URI_ABS_SEND_TIME, 0)
        if any(line.startswith("a=rtcp-fb:") and line.endswith(" transport-cc") for line in lines):
            twcc_id = twcc_id or section.extmap.get(URI_TRANSPORT_CC, 0)
    return (abs_id if 0 < abs_id < 15 else 0), (twcc_id if 0 < twcc_id < 15 else 0)
