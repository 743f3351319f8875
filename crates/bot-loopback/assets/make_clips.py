#!/usr/bin/env python3
"""Synthesizes the test bot's speech clips with espeak-ng (run once; the WAV
files are committed). Standard library only.

Each clip: espeak-ng (voice en-us, 165 words per minute) at 22050 Hz,
resampled to 16 kHz mono 16-bit with a windowed-sinc low-pass, leading and
trailing silence trimmed, peak normalized to -3 dBFS. clips.tsv lists
`kind<TAB>file<TAB>text` for every clip (kind: phrase or word).
"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
RATE = 16000

PHRASES = [
    "Hello, I would like to check the status of my order.",
    "Hi, I am calling about my account.",
    "Yes, that is right.",
    "No, that is not correct.",
    "Can you repeat that, please?",
    "My order number is one two three four.",
    "I would like to book an appointment for tomorrow morning.",
    "Can I speak to a human agent, please?",
    "Thank you, that is all I needed.",
    "Thank you, goodbye.",
    "Sorry, I did not catch that.",
    "Wait, I have a question before you go on.",
    "Could you tell me your opening hours?",
    "I want to cancel my subscription.",
    "Hello, can you hear me?",
    "Okay, sounds good.",
]

WORDS = (
    "zero one two three four five six seven eight nine ten "
    "yes no hello hi thanks thank you goodbye bye please okay sure great sorry "
    "i my me we you your it is are am was be do can could would will want need "
    "like have has a an the to for of on in at and or but not this that what when "
    "where why how who which order status account number name time today tomorrow "
    "morning afternoon evening appointment book cancel change check help call "
    "speak agent human question problem payment bill card address phone email "
    "again repeat right wrong correct good bad day week month price delivery "
    "refund ticket support service"
).split()


def synth(text):
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "165", "-w", tmp.name, text],
            check=True,
        )
        with wave.open(tmp.name) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    samples = struct.unpack("<%dh" % (len(frames) // 2), frames)
    return rate, [s / 32768.0 for s in samples]


def resample(samples, src, dst, taps=24):
    """Windowed-sinc (Blackman) resampling with the cut-off at the lower Nyquist."""
    ratio = dst / src
    cutoff = min(1.0, ratio) * 0.95
    out_len = int(len(samples) * ratio)
    out = []
    for n in range(out_len):
        t = n / ratio
        center = int(math.floor(t))
        acc = 0.0
        for k in range(center - taps + 1, center + taps + 1):
            if 0 <= k < len(samples):
                x = t - k
                w = 0.42 + 0.5 * math.cos(math.pi * x / taps) + 0.08 * math.cos(2 * math.pi * x / taps)
                if abs(x) >= taps:
                    continue
                sinc = cutoff if x == 0 else math.sin(math.pi * cutoff * x) / (math.pi * x)
                acc += samples[k] * sinc * w
        out.append(acc)
    return out


def trim(samples, rate, threshold=0.01, pad_ms=20):
    idx = [i for i, s in enumerate(samples) if abs(s) > threshold]
    if not idx:
        return samples
    pad = rate * pad_ms // 1000
    return samples[max(0, idx[0] - pad): idx[-1] + pad]


def write(path, samples):
    peak = max(abs(s) for s in samples) or 1.0
    gain = 10 ** (-3 / 20) / peak
    data = struct.pack(
        "<%dh" % len(samples),
        *[max(-32768, min(32767, int(round(s * gain * 32767)))) for s in samples],
    )
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data)


def slug(text):
    s = "".join(c.lower() if c.isalnum() else "_" for c in text)
    return "_".join(p for p in s.split("_") if p)[:48]


def main():
    rows = []
    for kind, items in (("phrase", PHRASES), ("word", WORDS)):
        folder = os.path.join(HERE, kind + "s")
        os.makedirs(folder, exist_ok=True)
        for text in items:
            name = "%ss/%s.wav" % (kind, slug(text))
            src, samples = synth(text)
            samples = trim(resample(samples, src, RATE), RATE)
            write(os.path.join(HERE, name), samples)
            rows.append("%s\t%s\t%s" % (kind, name, text))
            print(name, file=sys.stderr)
    with open(os.path.join(HERE, "clips.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
