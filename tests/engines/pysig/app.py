"""pysig: a small signature engine in Python, for cordon's tests.

It proves that engines built with componentize-py load, scan and are
cached like any other. Signatures come from the definitions directory
(`/definitions/*.sig`, one `Name=literal text` per line; `#` starts a
comment) and are read once, in `init`; with no definitions it knows only
EICAR. Built by `./dev test-engines` (componentize-py, pinned).
"""

import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

EICAR = (
    b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
)
DEFINITIONS = "/definitions"

# Filled by `init`; lives in the snapshot, so each scan starts with it.
SIGNATURES = []
INFO = types.EngineInfo(
    name="pysig",
    vendor="cordon tests",
    version="0.1.0",
    definitions_version="",
    wants_parts=True,
)


def read_definitions():
    """Signatures from /definitions, sorted by file name."""
    found = []
    try:
        names = sorted(os.listdir(DEFINITIONS))
    except OSError:
        return [("Eicar-Test-Signature", EICAR)]
    for name in names:
        if not name.endswith(".sig"):
            continue
        with open(os.path.join(DEFINITIONS, name), "rb") as f:
            for number, line in enumerate(f.read().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith(b"#"):
                    continue
                sig_name, sep, text = line.partition(b"=")
                if not sep or not sig_name or not text:
                    raise Err(f"{name} line {number}: expected Name=text")
                found.append((sig_name.decode("utf-8", "replace"), text))
    return found


def verdict(data, part):
    threats = [
        types.Threat(name=name, kind=types.ThreatKind.VIRUS, part=part)
        for name, text in SIGNATURES
        if text in data
    ]
    outcome = types.Outcome_Detected(threats) if threats else types.Outcome_Clean()
    return types.Verdict(
        outcome=outcome, spam_score=None, rules=[], recipients=[], headers=[]
    )


class Engine(exports.Engine):
    def info(self):
        return INFO

    def init(self, settings):
        global SIGNATURES
        for s in settings:
            if s.key == "definitions_version":
                INFO.definitions_version = s.value
            else:
                raise Err(f"unknown setting {s.key!r}: pysig knows definitions_version")
        SIGNATURES = read_definitions()
        host.log(host.Level.INFO, f"pysig: {len(SIGNATURES)} signatures")
        return INFO

    def scan(self, envelope, message):
        return verdict(message, "")

    def scan_part(self, envelope, part, content):
        return verdict(content, part.file_name or f"part {part.index}")

    def learn(self, envelope, message, class_, reference):
        # pysig learns nothing.
        return types.LearnOutcome.UNSUPPORTED
