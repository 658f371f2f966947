"""What the utterance prompt costs against the placeholder prompt, per hour
of meeting, and what the webhook spends on a 10-hour transcript.

    .venv/bin/python bench/moments.py [--hours 10] [--skip-memory]

1. Prompt tokens per hour of meeting, for the utterance prompt (who said
   what, and when: moments.py) and the placeholder prompt (the gateway
   substitutes the plain text), on synthetic meetings made from the sample
   meetings' own utterances at 150 words a minute, with turns of three
   lengths. Three counts: ceil(characters / 4), which is what the stand-in
   reports as usage; a regex proxy for a BPE tokenizer (proxy_tokens), kept
   to compare with the figures before; and Claude's published tokenizer
   (claude_tokens: the real count, as far as Anthropic has published one;
   "n/a" when it is not installed). Digits and punctuation cost what they
   cost in a BPE tokenizer, which makes a speaker's mark or a minute's dearer
   than characters say.
2. Attribution accuracy on the sample meetings, in process: the stand-in's
   answer to the prompt the webhook sends, checked by moments.checked and
   scored as tests/test_speakers.py scores the documents end to end (the
   owner right and `said_at` within 10 s of the ground truth).
3. Gateway dollars at an assumed price (PRICE_IN / PRICE_OUT below).
4. The webhook's CPU time and peak memory, in a fresh subprocess, to parse
   a 10-hour transcript with words (as AssemblyAI returns it: top-level
   `words` and `utterances[].words`) the way the webhook reads it, build
   the prompt, and check a model's answer against it.

Figures, not assertions. Written into BENCHMARKS.md ("Moments") by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.assemblyai_standin import rules, server, transcripts  # noqa: E402
from meeting_actions import action_items, moments, prompt  # noqa: E402

SAMPLES = ROOT / "local" / "samples"
MODEL = "claude-sonnet-4-6"  # the product's default LLM_MODEL
# The assumed price: the provider's list price for the default model, as the
# stand-in's GET /v1/models reports it (local/assemblyai_standin/server.py,
# MODEL_FACTS), in USD per token. AssemblyAI bills the gateway itself; its
# price may differ. The ratio between the prompts does not depend on it.
PRICE_IN = server.MODEL_FACTS[MODEL][3] / 1_000_000
PRICE_OUT = server.MODEL_FACTS[MODEL][4] / 1_000_000
WORDS_PER_MINUTE = 150  # an hour of speech: 9,000 words (the facts say 8,000-10,000)
NAMES = {"A": "Dana", "B": "Lena", "C": "Priya", "D": "Marcus"}
# A proxy for BPE tokenisation: the pieces a cl100k-style pre-tokeniser
# makes (a word with its leading space, 1-3 digit groups, punctuation runs,
# line breaks); a run of letters longer than 8 counts as two tokens.
_PIECE = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s*\n|\s+")


def proxy_tokens(text: str) -> int:
    return sum(
        2 if piece.strip().isalpha() and len(piece.strip()) > 8 else 1
        for piece in _PIECE.findall(text)
    )


def quarter_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# Claude's published tokenizer: the `tokenizer.json` that the anthropic SDK
# shipped up to about version 0.38 (requirements-dev.txt pins 0.30.0 for it
# alone), read with Hugging Face `tokenizers` as that SDK's count_tokens did.
# Anthropic published it for its older models (the SDK: "only accurate for
# older models, e.g. claude-2.1"); the current models' tokenizer is not
# published, so it is the nearest real count there is, not theirs exactly.
_CLAUDE: list = []  # the tokenizer once loaded, or None when it cannot be


def claude_tokenizer():
    """The tokenizer, or None when the SDK's file or `tokenizers` is missing."""
    if not _CLAUDE:
        try:
            from tokenizers import Tokenizer

            # Read from the installed distribution: importing the SDK is not needed.
            path = Path(
                str(metadata.distribution("anthropic").locate_file("anthropic/tokenizer.json"))
            )
            _CLAUDE.append(Tokenizer.from_str(path.read_text(encoding="utf-8")))
        except (ImportError, OSError):  # metadata.PackageNotFoundError is an ImportError
            _CLAUDE.append(None)
    return _CLAUDE[0]


def claude_tokens(text: str) -> int | None:
    """Tokens by Claude's published tokenizer, or None without it."""
    tokenizer = claude_tokenizer()
    return None if tokenizer is None else len(tokenizer.encode(text).ids)


def _sentences() -> list[tuple[str, str]]:
    """(label, sentence) of every English sample utterance, in order, relabelled
    onto A-D (the token figures are English speech's, as before)."""
    out = []
    for path in sorted(SAMPLES.glob("*.json")):
        sample = json.loads(path.read_text())
        if not sample.get("language_code", "en").startswith("en"):
            continue
        for u in sample["utterances"]:
            for sentence in re.findall(r"[^.!?]+[.!?]?", u["text"]):
                if sentence.strip():
                    out.append(("ABCD"[(ord(u["speaker"]) - 65) % 4], sentence.strip()))
    return out


def synthetic(hours: float, words_per_turn: int | None) -> dict:
    """A meeting of `hours`, as the stand-in models one: utterances made of
    the samples' sentences, at WORDS_PER_MINUTE. `words_per_turn` None keeps
    the samples' own utterances (about 10 words, with runs of one speaker);
    else each turn is one speaker's sentences up to that many words, the
    speakers taking turns."""
    pool = _sentences()
    ms_per_word = 60_000 // WORDS_PER_MINUTE
    utterances, at, i = [], 0, 0
    end = int(hours * 3600 * 1000)
    speaker_turn = 0
    while at < end:
        if words_per_turn is None:
            speaker, text = pool[i % len(pool)]
            i += 1
        else:
            speaker, parts, words = "ABCD"[speaker_turn % 4], [], 0
            speaker_turn += 1
            while words < words_per_turn:
                sentence = pool[i % len(pool)][1]
                i += 1
                parts.append(sentence)
                words += len(sentence.split())
            text = " ".join(parts)
        length = len(text.split()) * ms_per_word
        utterances.append({"speaker": speaker, "start": at, "end": at + length, "text": text})
        at += length + 300
    return {"utterances": utterances, "speakers": NAMES, "audio_duration": at // 1000}


def transcript_of(meeting: dict, identified: bool) -> dict:
    mapping = meeting["speakers"] if identified else {}
    t = {
        "id": "bench",
        "status": "completed",
        "audio_duration": meeting["audio_duration"],
        "speaker_labels": True,
        **transcripts.transcript_fields(transcripts.segments(meeting, True, mapping), True),
    }
    if identified:
        t["speech_understanding"] = {
            "response": {"speaker_identification": {"mapping": mapping, "status": "success"}}
        }
    return t


def prompts(t: dict) -> dict[str, dict]:
    """Both request bodies for one transcript, and the text each model reads."""
    meeting = moments.read(t)
    utter = prompt.request_body(
        "bench", MODEL, prompt.DEFAULT_ANSWER_FORMAT, 4000, meeting.lines, meeting.unnamed
    )
    holder = prompt.request_body("bench", MODEL, prompt.DEFAULT_ANSWER_FORMAT, 4000)
    out = {}
    for kind, body in (("utterances", utter), ("placeholder", holder)):
        # As the gateway (and the stand-in) counts it: after substitution.
        text = "".join(m["content"] for m in body["messages"]).replace(
            prompt.PLACEHOLDER, t["text"], 1
        )
        out[kind] = {
            "body": body,
            "text": text,
            "cut": meeting.cut_note if kind == "utterances" else None,
        }
    return out


def attribution() -> list[dict]:
    """Per sample, named and with labels only: how many true items the
    checked answer attributes right (with labels only, the items whose
    owner is said by name: the others' owner is "Speaker A"), and how
    many quotes were found near the time the model gave, elsewhere, or not."""
    rows = []
    for path in sorted(SAMPLES.glob("*.json")):
        sample = json.loads(path.read_text())
        for identified in (True, False):
            t = transcript_of(sample, identified)
            meeting = moments.read(t)
            body = prompts(t)["utterances"]["body"]
            content = rules.answer("", body["response_format"],
                                   rules.transcript_lines(body["messages"]))  # fmt: skip
            result = action_items.parse(content, "stop", moments=True)
            result, counts = moments.checked(result, meeting, None)
            truth = [e for e in sample["expected_items"]
                     if identified or e["owner_source"] == "spoken"]  # fmt: skip
            left, right = list(result.items), 0
            for e in truth:
                hit = next((i for i in left if i["owner"] == e["owner"] and i["said_at"] is not None
                            and abs(i["said_at"] - e["said_at"]) <= 10), None)  # fmt: skip
                if hit is not None:
                    right += 1
                    left.remove(hit)
            rows.append({"sample": path.stem, "identified": identified, "right": right,
                         "total": len(truth), "quotes": counts,
                         "language": sample.get("language_code", "en_us")})  # fmt: skip
    return rows


def attribution_in_repeats(hours: float) -> list[dict]:
    """On synthetic meetings, where each sample sentence comes back every few
    minutes: how many of the stand-in's items (all of them, uncapped) the
    check puts in the turn they came from (its time within the turn, its
    speaker the turn's), from the minute the prompt lets the model give."""
    rows = []
    for label, per_turn in (("samples' own (~10 words)", None), ("20 words", 20)):
        t = transcript_of(synthetic(hours, per_turn), True)
        meeting = moments.read(t)
        body = prompts(t)["utterances"]["body"]
        lines = rules.transcript_lines(body["messages"])
        origin = [i for i, line in enumerate(lines) for _ in rules.extract_lines([line])]
        content = rules.answer("", body["response_format"], lines)
        claimed = action_items._clean_items(json.loads(content)["action_items"], moments=True)
        items, counts = moments.check(claimed, meeting, None)
        turns = [meeting.turns[i] for i in origin]
        right = sum(
            1
            for item, turn in zip(items, turns, strict=True)
            if item["said_at"] is not None
            and turn.start // 1000 <= item["said_at"] <= turn.end // 1000
            and item["said_by"] == turn.speaker
        )
        rows.append({"turns": label, "right": right, "total": len(items), "quotes": counts})
    return rows


def output_tokens_per_item() -> dict[str, float]:
    """ceil(chars/4) of the stand-in's answer per item, for each prompt, on the samples."""
    totals = {"utterances": [0, 0], "placeholder": [0, 0]}
    for path in sorted(SAMPLES.glob("*.json")):
        sample = json.loads(path.read_text())
        t = transcript_of(sample, True)
        for kind, p in prompts(t).items():
            body = p["body"]
            lines = rules.transcript_lines(body["messages"])
            content = rules.answer(t["text"] if kind == "placeholder" else "",
                                   body["response_format"], lines)  # fmt: skip
            n = len(json.loads(content)["action_items"])
            totals[kind][0] += quarter_tokens(content)
            totals[kind][1] += n
    return {k: v[0] / v[1] for k, v in totals.items()}


def token_table(hours: float) -> list[dict]:
    rows = []
    for label, per_turn in (("samples' own (~10 words)", None), ("20 words", 20),
                            ("40 words", 40)):  # fmt: skip
        meeting = synthetic(hours, per_turn)
        for identified in (True, False):
            t = transcript_of(meeting, identified)
            p = prompts(t)
            row = {
                "turns": label,
                "names": "identified" if identified else "labels only",
                "utterances": len(meeting["utterances"]),
                "turn_count": len(moments.read(t).turns),
                "lines": p["utterances"]["text"].count("\n"),
                "words": len(t["text"].split()),
            }
            for kind in ("utterances", "placeholder"):
                row[f"{kind}_quarter"] = quarter_tokens(p[kind]["text"]) / hours
                row[f"{kind}_proxy"] = proxy_tokens(p[kind]["text"]) / hours
                claude = claude_tokens(p[kind]["text"])
                row[f"{kind}_claude"] = None if claude is None else claude / hours
            rows.append(row)
    return rows


# --- the webhook on a long transcript, in a subprocess -----------------------------

CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from meeting_actions import action_items, assemblyai, moments, prompt
trace = sys.argv[4] == "trace"
if trace:
    tracemalloc.start()
def rss(field="VmHWM"):
    # VmHWM: this process image's peak RSS (ru_maxrss would keep the parent's
    # peak across fork and exec); VmRSS: its RSS now.
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
answer = open(sys.argv[3]).read()
steps = {}
def step(name, started):
    steps[name] = {"cpu_s": round(time.process_time() - started, 3),
                   "peak_rss_mib": round(rss(), 1), "rss_mib": round(rss("VmRSS"), 1)}
    if trace:
        now, peak = tracemalloc.get_traced_memory()
        steps[name].update(traced_mib=round(now / 2**20, 1), traced_peak_mib=round(peak / 2**20, 1))
class Body:  # the transcript's body as a streamed response gives it
    def iter_content(self, size):
        with open(sys.argv[2], "rb") as f:
            while chunk := f.read(size):
                yield chunk
t0 = time.process_time()
# As assemblyai.get_transcript reads it: decoded and parsed as it arrives.
transcript = assemblyai.parse_transcript(assemblyai._pieces(Body()))
step("read the transcript as it arrives", t0)
t0 = time.process_time()
meeting = moments.read(transcript)
transcript.pop("utterances")                   # as generate.py does
body = prompt.request_body("t", "m", "bullet points", 4000, meeting.lines, meeting.unnamed)
meeting.lines = ""
sent = json.dumps(body).encode()               # what requests sends
step("build the prompt", t0)
t0 = time.process_time()
result = action_items.parse(answer, "stop", moments=True)
result, counts = moments.checked(result, meeting, {"kind": "url", "audio_url": "https://m/a.wav"})
step("check %d items" % len(result.items), t0)
# The worst case: no time given, so every quote is looked for in the whole meeting.
blind = json.loads(answer)
for item in blind["action_items"]:
    item["said_at"] = None
t0 = time.process_time()
result = action_items.parse(json.dumps(blind), "stop", moments=True)
result, blind_counts = moments.checked(result, meeting, None)
step("check them without times", t0)
print(json.dumps({"baseline_rss_mib": round(base, 1), "steps": steps, "prompt_chars": len(sent),
                  "cut": meeting.cut_note, "counts": counts, "blind_counts": blind_counts,
                  "turns": len(meeting.turns)}))
"""


def webhook_memory(hours: float) -> dict:
    """The webhook's work on a long transcript, each mode in a fresh
    interpreter that imports only what that work needs: "plain" for CPU
    time and peak RSS, "trace" for the Python heap's peak (tracemalloc
    slows it down). The model's answer is the stand-in's, made here."""
    meeting = synthetic(hours, 20)
    t = transcript_of(meeting, True)
    body = prompts(t)["utterances"]["body"]
    answer = rules.answer("", body["response_format"], rules.transcript_lines(body["messages"]))
    with tempfile.TemporaryDirectory() as tmp:
        path, answer_path = Path(tmp) / "transcript.json", Path(tmp) / "answer.json"
        path.write_text(json.dumps(t))
        answer_path.write_text(answer)
        out = {"hours": hours, "json_mb": path.stat().st_size / 1e6, "words": len(t["words"])}
        for mode in ("plain", "trace"):
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(ROOT), str(path), str(answer_path), mode],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            out[mode] = json.loads(run.stdout)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=10.0, help="length of the long transcript")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    print(f"Prompt tokens per hour of meeting ({WORDS_PER_MINUTE} words a minute)")
    print("  q = ceil(chars/4), the stand-in's usage; p = BPE proxy (bench/moments.py);")
    if claude_tokenizer() is None:
        print("  c = Claude's published tokenizer: NOT INSTALLED, no c figures (it comes with")
        print("      requirements-dev.txt: anthropic==0.30.0's tokenizer.json and tokenizers)")
    else:
        print("  c = Claude's published tokenizer (the anthropic 0.30.0 SDK's tokenizer.json)")
    header = ("turns", "names", "turns/h", "lines/h", "utter q", "holder q", "ratio q", "utter p",
              "holder p", "ratio p", "utter c", "holder c", "ratio c")  # fmt: skip
    print("  " + " | ".join(f"{h:>24}" if i == 0 else f"{h:>9}" for i, h in enumerate(header)))
    rows = token_table(1.0)
    for r in rows:
        cells = [r["turns"], r["names"], r["turn_count"], r["lines"]]
        for count in ("quarter", "proxy", "claude"):
            mine, theirs = r[f"utterances_{count}"], r[f"placeholder_{count}"]
            if mine is None:
                cells += ["n/a"] * 3
            else:
                cells += [round(mine), round(theirs), f"{mine / theirs:.3f}"]
        print("  " + " | ".join(f"{c:>24}" if i == 0 else f"{c:>9}" for i, c in enumerate(cells)))

    print("\nThe sample meetings themselves (short excerpts: the instructions weigh most)")
    for path in sorted(SAMPLES.glob("*.json")):
        for identified in (True, False):
            p = prompts(transcript_of(json.loads(path.read_text()), identified))
            counts = []
            for name, count in (("q", quarter_tokens), ("p", proxy_tokens), ("c", claude_tokens)):
                mine, theirs = (count(p[k]["text"]) for k in ("utterances", "placeholder"))
                counts.append(f"{name} n/a" if mine is None
                              else f"{name} {mine} vs {theirs} ({mine / theirs:.2f})")  # fmt: skip
            print(
                f"  {path.stem:>16}, {'identified' if identified else 'labels only':>11}: "
                + ", ".join(counts)
            )

    accuracy = attribution()
    print("\nAttribution accuracy (the stand-in's answers, checked; owner right, said_at <= 10 s)")
    for a in accuracy:
        print(f"  {a['sample']:>19} ({a['language']:>5}), "
              f"{'identified' if a['identified'] else 'labels only':>11}: "
              f"{a['right']}/{a['total']}; quotes {a['quotes']}")  # fmt: skip
    english = {a["language"] for a in accuracy if a["language"].startswith("en")}
    groups = [("English", english)] + [(c, {c}) for c in sorted({a["language"] for a in accuracy}
                                                             - english)]  # fmt: skip
    for identified in (True, False):
        for label, codes in [("all", None), *groups]:
            got = [a for a in accuracy if a["identified"] == identified
                   and (codes is None or a["language"] in codes)]  # fmt: skip
            right, total = sum(a["right"] for a in got), sum(a["total"] for a in got)
            kind = "identified" if identified else "labels only"
            print(f"  {label + ', ' + kind:>29}: {right}/{total} = {right / total:.0%}")

    repeats = attribution_in_repeats(1.0)
    print("  in a synthetic hour (every sentence said again every few minutes), to the right turn:")
    for a in repeats:
        print(f"  {a['turns']:>29}: {a['right']}/{a['total']}; quotes {a['quotes']}")

    per_item = output_tokens_per_item()
    print(f"\nOutput tokens per item (stand-in's answers on the samples, chars/4): "
          f"utterance prompt {per_item['utterances']:.1f}, placeholder prompt "
          f"{per_item['placeholder']:.1f} (it also asks for the 'formatted' copy)")  # fmt: skip
    items = 20
    print(f"\nGateway dollars per hour of meeting at ${PRICE_IN * 1e6:.2f} / "
          f"${PRICE_OUT * 1e6:.2f} per million input / output tokens ({MODEL}'s list price, "
          f"assumed), {items} items an hour:")  # fmt: skip
    for r in rows:
        cost = {
            kind: r[f"{kind}_quarter"] * PRICE_IN + per_item[kind] * items * PRICE_OUT
            for kind in ("utterances", "placeholder")
        }
        print(f"  {r['turns']:>24}, {r['names']:>11}: utterances ${cost['utterances']:.4f}, "
              f"placeholder ${cost['placeholder']:.4f} "
              f"(+${cost['utterances'] - cost['placeholder']:.4f})")  # fmt: skip

    if args.skip_memory:
        return
    m = webhook_memory(args.hours)
    print(f"\nWebhook on a {m['hours']:g}-hour transcript: {m['json_mb']:.1f} MB of JSON, "
          f"{m['words']} words, {m['plain']['turns']} turns "
          f"(fresh interpreter: {m['plain']['baseline_rss_mib']} MiB)")  # fmt: skip
    for name, s in m["plain"]["steps"].items():
        traced = m["trace"]["steps"][name]
        print(f"  {name:>32}: CPU {s['cpu_s']:.2f} s, RSS {s['rss_mib']} MiB after, peak "
              f"{s['peak_rss_mib']} MiB; Python heap {traced['traced_mib']} MiB after, peak "
              f"{traced['traced_peak_mib']} MiB")  # fmt: skip
    print(f"  prompt body {m['plain']['prompt_chars']:,} characters; cut: {m['plain']['cut']}")
    print(f"  quotes {m['plain']['counts']}; without times {m['plain']['blind_counts']}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "moments.json").write_text(
        json.dumps(
            {
                "tokens": rows,
                "attribution": accuracy,
                "repeats": repeats,
                "output_per_item": per_item,
                "webhook": m,
            },
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
