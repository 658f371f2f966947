"""Write the samples' audio files: a few seconds of quiet tones each.

The stand-in recognises a sample by its audio's sha256, so each file's
tones differ. The transcripts are in the .json files beside them; the
meetings' lengths there (audio_duration) are the meetings', not the tones'.
"""

import math
import struct
import wave
from pathlib import Path

RATE = 8000


def write(path: Path, base_hz: float, seconds: float = 2.0) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        frames = bytearray()
        for i in range(int(RATE * seconds)):
            hz = base_hz * (1 + (i // RATE) * 0.25)
            frames += struct.pack("<h", int(3000 * math.sin(2 * math.pi * hz * i / RATE)))
        out.writeframes(bytes(frames))


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "weekly-sync.wav", 440)
    write(here / "launch-review.wav", 523)
    write(here / "planning-offsite.wav", 587)
    write(here / "vendor-call.wav", 784)
    write(here / "revision-trimestral.wav", 659)
    write(here / "teireikai.wav", 698)
