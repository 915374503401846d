"""The name of every counter in `Engine.stats`, and of every reason, trigger and family.

The engine, `domain` and the daemon count into `Engine.stats` (a `Counter`)
under the keys below, and their log lines carry the same words (`reason=`,
`trigger=`, `family=`); `metrics` derives its table of Prometheus series from
the groups here. Each name is written once, in this module: a new reason
added to its group is counted, logged and exported with no other change
(tests/unit/test_metrics.py fails on a key or reason written anywhere else).

Keys are plain strings (what `Counter` holds, what the `stopped` log line
and `metrics` show): a module constant costs the hot path one global lookup.
"""

from __future__ import annotations

# -- reasons: the `reason` of a `dropped` log line, and of a metric's label ------------

# Captured frames that are not a usable RARP request (or a parseable answer).
MALFORMED = "malformed"
NOT_RARP = "not-rarp"
NOT_ETHERNET_IPV4 = "not-ethernet-ipv4"
NOT_RARP_REQUEST = "not-rarp-request"
TARGET_NOT_UNICAST = "target-not-unicast"
MALFORMED_REPLY = "malformed-reply"
FRAME_DROPS = (
    MALFORMED,
    NOT_RARP,
    NOT_ETHERNET_IPV4,
    NOT_RARP_REQUEST,
    TARGET_NOT_UNICAST,
    MALFORMED_REPLY,
)

# Sightings that are not this switch's to serve: `domain.resolve`'s verdicts,
# and the operator's include/exclude globs.
UNKNOWN_INTERFACE = "unknown-interface"
FABRIC_PORT = "fabric-port"
BRIDGE_COPY = "bridge-copy"
STACKED_COPY = "stacked-copy"
VLAN_PARENT_COPY = "vlan-parent-copy"
AGGREGATE_MEMBER_COPY = "aggregate-member-copy"
# A VLAN-filtering bridge drops the frame (br_allowed_ingress): a tagged VID the port is
# not a member of, or an untagged frame on a port without a PVID.
VLAN_NOT_MEMBER = "vlan-not-member"
NO_L3_INTERFACE = "no-l3-interface"
EXCLUDED_PORT = "excluded-port"
IGNORED = (
    UNKNOWN_INTERFACE,
    FABRIC_PORT,
    BRIDGE_COPY,
    STACKED_COPY,
    VLAN_PARENT_COPY,
    AGGREGATE_MEMBER_COPY,
    VLAN_NOT_MEMBER,
    NO_L3_INTERFACE,
    EXCLUDED_PORT,
)
# Copies of a frame already seen on its ingress port: expected, logged at debug level.
COPIES = frozenset({BRIDGE_COPY, STACKED_COPY, VLAN_PARENT_COPY, AGGREGATE_MEMBER_COPY})

# Announcements on a served port that start no round.
DUPLICATE = "duplicate"  # within the hold-down of the last round
UNKNOWN_MAC = "unknown-mac"  # no address of the MAC is known
RATE_LIMIT_PORT = "rate-limit-port"
RATE_LIMIT_GLOBAL = "rate-limit-global"
ANNOUNCEMENT_DROPS = (DUPLICATE, UNKNOWN_MAC, RATE_LIMIT_PORT, RATE_LIMIT_GLOBAL)

# Probes held back (retried later).
RATE_LIMIT_PROBE = "rate-limit-probe"
PROBE_DROPS = (RATE_LIMIT_PROBE,)

# Answers (ARP reply / NA) for an address of an open round that prove nothing: not seen
# entering through a local port of the domain (only on the SVI or bridge: the bridge's
# own ARP/ND suppression answered from its neighbor table, br_do_proxy_suppress_arp; or
# it came in from the fabric). They start no takeover.
ANSWER_NOT_LOCAL = "answer-not-local"
ANSWER_DROPS = (ANSWER_NOT_LOCAL,)

# Every reason a `dropped.<reason>` key can carry.
DROP_REASONS = FRAME_DROPS + IGNORED + ANNOUNCEMENT_DROPS + PROBE_DROPS + ANSWER_DROPS

# Addresses of an announced MAC that are not probed.
NO_SOURCE_ADDRESS = "no-source-address"  # no source address of its family on the L3 interface
SKIP_REASONS = (NO_SOURCE_ADDRESS,)

# -- triggers: what started a round --------------------------------------------------

RARP = "rarp"
FDB_MOVE = "fdb-move"  # the bridge learned the MAC on a local port after another port
TRIGGERS = (RARP, FDB_MOVE)

# -- families: IP version -> the `family` of log lines and metric labels --------------

FAMILIES = {4: "ipv4", 6: "ipv6"}

# -- counters ------------------------------------------------------------------------

FRAMES = "frames"  # frames the capture delivered
FDB_MOVES = "fdb-moves"  # MACs the bridge moved between ports (served or not)
ANNOUNCEMENTS = "announcements"  # announcements past the rate limits (sum of others)
ROUNDS = "rounds"  # rounds started (the sum of rounds.<trigger>)
REPLIES = "replies"  # answers heard for an address of an open round
TAKEOVERS = "takeovers"
# Takeovers held (`takeover-delay`) and made unnecessary by the old leaf's withdrawal.
TAKEOVERS_WITHHELD = "takeovers-withheld"
REMOTE_DELETED = "remote-deleted"
RESOLVES = "resolves"
CONFIRMED = "confirmed"  # addresses confirmed (the sum of confirmed.<family>)
GAVE_UP = "gave-up"
# Addresses still followed when the daemon stopped (SIGTERM/SIGINT): not gave-up.
CUT_SHORT = "cut-short"
SEND_ERRORS = "send-errors"
NETLINK_REDUMPS = "netlink.redumps"
NETLINK_ERRORS = "netlink.errors"
RELOADS = "reloads"
RELOAD_ERRORS = "reload.errors"
PLAIN = (
    FRAMES,
    FDB_MOVES,
    ANNOUNCEMENTS,
    ROUNDS,
    REPLIES,
    TAKEOVERS,
    TAKEOVERS_WITHHELD,
    REMOTE_DELETED,
    RESOLVES,
    CONFIRMED,
    GAVE_UP,
    CUT_SHORT,
    SEND_ERRORS,
    NETLINK_REDUMPS,
    NETLINK_ERRORS,
    RELOADS,
    RELOAD_ERRORS,
)

# Counters by label, looked up (not formatted) where they are counted.
DROPPED = {r: f"dropped.{r}" for r in DROP_REASONS}
SKIPPED = {r: f"skipped.{r}" for r in SKIP_REASONS}
ANNOUNCED = {t: f"{ANNOUNCEMENTS}.{t}" for t in TRIGGERS}
ROUNDS_BY = {t: f"{ROUNDS}.{t}" for t in TRIGGERS}
PROBES = {v: f"probes.{f}" for v, f in FAMILIES.items()}  # by IP version
CONFIRMED_BY = {v: f"{CONFIRMED}.{f}" for v, f in FAMILIES.items()}  # by IP version


def dropped(reason: str) -> str:
    """The counter of drops for `reason` (one of DROP_REASONS; any other is
    still counted, and `metrics` exports it as unmapped rather than lose it)."""
    return DROPPED.get(reason) or f"dropped.{reason}"


def keys() -> frozenset[str]:
    """Every key the engine and the daemon can count under."""
    out = set(PLAIN)
    for table in (DROPPED, SKIPPED, ANNOUNCED, ROUNDS_BY, PROBES, CONFIRMED_BY):
        out.update(table.values())
    return frozenset(out)
