#!/usr/bin/env python3
"""Writes docs/compatibility.md from the differential test results in target/compat/
(raw.json from `cargo test -p skein-compat`, clients.json from `pytest tests/compat`).

Every scenario is listed as "same" or "differs: reason". The doc is only rewritten when both
result files exist, so a run of one suite alone never drops the other's scenarios.
"""

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "compat"
DOC = REPO / "docs" / "compatibility.md"

# What the APIs that only Kafka serves are for, for the ApiVersions table.
KAFKA_ONLY_NOTES = {
    "SaslHandshake": "authentication (Skein: no SASL yet)",
    "SaslAuthenticate": "authentication (Skein: no SASL yet)",
    "OffsetForLeaderEpoch": "replication and truncation detection (Skein: single node)",
    "AddPartitionsToTxn": "transactions (Skein: not yet)",
    "AddOffsetsToTxn": "transactions (Skein: not yet)",
    "EndTxn": "transactions (Skein: not yet)",
    "WriteTxnMarkers": "transactions (Skein: not yet)",
    "TxnOffsetCommit": "transactions (Skein: not yet)",
    "DescribeTransactions": "transactions (Skein: not yet)",
    "ListTransactions": "transactions (Skein: not yet)",
    "DescribeAcls": "authorization (Skein: no ACLs)",
    "CreateAcls": "authorization (Skein: no ACLs)",
    "DeleteAcls": "authorization (Skein: no ACLs)",
    "AlterReplicaLogDirs": "moving replicas between disks (Skein: one data dir)",
    "CreateDelegationToken": "delegation tokens (Skein: no authentication)",
    "RenewDelegationToken": "delegation tokens (Skein: no authentication)",
    "ExpireDelegationToken": "delegation tokens (Skein: no authentication)",
    "DescribeDelegationToken": "delegation tokens (Skein: no authentication)",
    "DescribeClientQuotas": "quotas (Skein: none)",
    "AlterClientQuotas": "quotas (Skein: none)",
    "DescribeUserScramCredentials": "SCRAM users (Skein: no authentication)",
    "AlterUserScramCredentials": "SCRAM users (Skein: no authentication)",
    "DescribeQuorum": "KRaft quorum (Skein: no KRaft)",
    "UpdateFeatures": "KRaft feature levels (Skein: no KRaft)",
    "UnregisterBroker": "KRaft cluster membership (Skein: single node)",
    "AddRaftVoter": "KRaft quorum (Skein: no KRaft)",
    "RemoveRaftVoter": "KRaft quorum (Skein: no KRaft)",
    "ListClientMetricsResources": "client telemetry, KIP-714 (Skein: not yet)",
    "ShareGroupHeartbeat": "share groups, KIP-932 (Skein: not yet)",
    "ShareGroupDescribe": "share groups, KIP-932 (Skein: not yet)",
    "ShareFetch": "share groups, KIP-932 (Skein: not yet)",
    "ShareAcknowledge": "share groups, KIP-932 (Skein: not yet)",
    "InitializeShareGroupState": "share group state, KIP-932 (Skein: not yet)",
    "ReadShareGroupState": "share group state, KIP-932 (Skein: not yet)",
    "WriteShareGroupState": "share group state, KIP-932 (Skein: not yet)",
    "DeleteShareGroupState": "share group state, KIP-932 (Skein: not yet)",
    "ReadShareGroupStateSummary": "share group state, KIP-932 (Skein: not yet)",
}

AREAS = {
    "admin": "Admin: topics, partitions, configs, cluster, metadata",
    "produce": "Produce",
    "fetch": "Fetch",
    "list_offsets": "ListOffsets",
    "delete_records": "DeleteRecords",
    "group": "Classic consumer groups",
    "offsets": "Committed offsets",
    "consumer_group": "KIP-848 consumer groups",
    "api_versions": "ApiVersions",
    "protocol": "Protocol framing",
    "clients": "Real clients (confluent-kafka / librdkafka)",
}


def load(name):
    path = RESULTS / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


def api_table(scenario):
    skein, kafka = scenario["skein"], scenario["kafka"]
    if "scenario_error" in skein or "scenario_error" in kafka:
        return []
    keys = sorted(set(skein) | set(kafka))
    rows = ["| API | Skein | Kafka | note |", "| --- | --- | --- | --- |"]
    for k in keys:
        s, ka = skein.get(k, "-"), kafka.get(k, "-")
        name = k.split(" ", 1)[1]
        if s == ka:
            note = ""
        elif s == "-":
            note = KAFKA_ONLY_NOTES.get(name, "not served by Skein")
            if name.startswith("ApiKey"):
                note = "newer than Skein's protocol definitions"
        elif ka == "-":
            note = "not served by Kafka"
        else:
            note = "version ranges differ"
        rows.append(f"| {k} | {s} | {ka} | {note} |")
    return rows


def main():
    raw, clients = load("raw.json"), load("clients.json")
    if raw is None or clients is None:
        missing = [n for n, d in (("raw.json", raw), ("clients.json", clients)) if d is None]
        print(f"gen_doc: {', '.join(missing)} missing in {RESULTS}; {DOC} left as it is")
        return 0
    scenarios = raw["scenarios"] + clients["scenarios"]
    same = sum(s["status"] == "same" for s in scenarios)
    differs = [s for s in scenarios if s["status"] != "same"]
    out = [
        "# Compatibility with Apache Kafka",
        "",
        "Generated by `tests/compat/gen_doc.py` from the differential tests (do not edit by",
        "hand): every scenario runs against Skein and against the reference Apache Kafka broker",
        "(`scripts/kafka-reference`, one KRaft node, settings matched to Skein's defaults), and",
        "what a client observes is compared. `cargo test -p skein-compat` runs the raw-protocol",
        "scenarios (requests built with Skein's own codec); `python3 -m pytest tests/compat` runs",
        "the client scenarios through confluent-kafka (librdkafka). Observations keep error codes,",
        "offsets, counts, states and config values; they leave out ids, timestamps, host/ports,",
        "throttle times, cluster ids and the text of error messages (only whether a message was",
        "given is kept where it matters).",
        "",
        f"**{len(scenarios)} scenarios: {same} same, {len(differs)} differ.** A difference fails the",
        "tests unless it is listed with a reason in `tests/compat/src/known.rs` or",
        "`tests/compat/test_clients.py`, and a listed difference that disappears fails too.",
        "",
        "## Differences",
        "",
    ]
    for s in differs:
        out.append(f"- `{s['name']}`: {s['reason'] or 'UNLISTED'}")
    out.append("")
    by_area = {}
    for s in scenarios:
        by_area.setdefault(s["area"], []).append(s)
    out += ["## Every scenario", ""]
    for area in list(AREAS) + sorted(set(by_area) - set(AREAS)):
        if area not in by_area:
            continue
        out += [f"### {AREAS.get(area, area)}", "", "| scenario | result |", "| --- | --- |"]
        for s in by_area[area]:
            result = "same" if s["status"] == "same" else f"differs: {s['reason'] or 'UNLISTED'}"
            out.append(f"| `{s['name']}` | {result} |")
        out.append("")
    adv = next((s for s in scenarios if s["name"] == "api_versions.advertised"), None)
    if adv:
        out += ["## ApiVersions, API by API", "", "What each broker advertises (min-max; `-` = not served).", ""]
        out += api_table(adv)
        out.append("")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(out))
    print(f"gen_doc: wrote {DOC} ({len(scenarios)} scenarios, {same} same, {len(differs)} differ)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
