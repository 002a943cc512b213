"""Whisper engines: transformers (default) and CTranslate2 (faster-whisper).

Both take 16 kHz mono float32 arrays and return :class:`Transcription` objects with segment
timestamps. Decoding is greedy by default: transformers 5 otherwise decodes with 5 beams.
Clips up to 30 s are batched into one ``generate`` call; longer clips use Whisper's sequential
long-form decoding, one at a time.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from .audio import SAMPLE_RATE

CHUNK_S = 30.0
PACK_WINDOW_S = 29.0  # below 30 s: the last timestamp token must still fit
# Silence between packed clips. Tiny.en's segment timestamps are off by up to about 1.5 s on
# real speech: with 1 s, segments often straddled two clips and whole windows were redone;
# 3 s measured fewer redone windows and a lower WER on dev-real (README, "Throughput").
PACK_GAP_S = 3.0


@dataclass(frozen=True)
class DecodingOptions:
    language: str | None = "en"
    task: str = "transcribe"
    num_beams: int = 1
    return_timestamps: bool = True
    batch_size: int = 8
    max_new_tokens: int | None = None
    pack: bool = True  # ctranslate2: share 30 s encoder windows between short clips


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcription:
    text: str
    language: str | None
    segments: list[Segment] = field(default_factory=list)

    def segments_as_dicts(self) -> list[dict]:
        return [asdict(s) for s in self.segments]


class WhisperEngine(ABC):
    """Loads a model once and transcribes batches of audio arrays."""

    name: str
    concurrent: bool = False

    def __init__(
        self,
        model_path: str,
        options: DecodingOptions,
        device: str | None = None,
        threads: int | None = None,
        revision: str | None = None,
        workers: int = 1,
    ):
        self.model_path = model_path
        self.options = options
        self.revision = revision
        self.device = device or self.default_device()
        self.threads = threads
        # Calls that may run at once from as many Python threads (ctranslate2: one model
        # replica each, sharing the weights); 1 for engines that are not thread-safe.
        self.workers = max(1, workers)

    @abstractmethod
    def transcribe(self, audios: list[np.ndarray]) -> list[Transcription]:
        """Transcribe each array; raises on failure of the whole call."""

    @staticmethod
    def default_device() -> str:
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"


class TransformersEngine(WhisperEngine):
    name = "transformers"
    concurrent = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if self.threads:
            torch.set_num_threads(self.threads)
        self._torch = torch
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        kw = {"revision": self.revision} if self.revision else {}
        self.processor = WhisperProcessor.from_pretrained(self.model_path, **kw)
        self.model = (
            WhisperForConditionalGeneration.from_pretrained(
                self.model_path, dtype=self.dtype, attn_implementation="sdpa", **kw
            )
            .to(self.device)
            .eval()
        )
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))

    def _generate_kwargs(self) -> dict:
        o = self.options
        kw: dict = {
            "num_beams": o.num_beams,
            "do_sample": False,
            "return_timestamps": o.return_timestamps,
        }
        if o.max_new_tokens:
            kw["max_new_tokens"] = o.max_new_tokens
        if self.multilingual:
            kw["task"] = o.task
            if o.language:
                kw["language"] = o.language
        return kw

    def _features(self, audios: list[np.ndarray], long_form: bool):
        kw = (
            {"truncation": False, "padding": "longest", "return_attention_mask": True}
            if long_form
            else {"return_attention_mask": True}
        )
        feats = self.processor.feature_extractor(
            audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", **kw
        )
        return (
            feats.input_features.to(self.device, self.dtype),
            feats.attention_mask.to(self.device),
        )

    def _decode(self, tokens) -> Transcription:
        tok = self.processor.tokenizer
        language = self.options.language if self.multilingual else "en"
        if not self.options.return_timestamps:
            return Transcription(tok.decode(tokens, skip_special_tokens=True).strip(), language)
        out = tok.decode(tokens, skip_special_tokens=True, output_offsets=True)
        segments = [
            Segment(float(o["timestamp"][0]), float(o["timestamp"][1] or 0.0), o["text"].strip())
            for o in out.get("offsets", [])
        ]
        return Transcription(out["text"].strip(), language, segments)

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcription]:
        results: list[Transcription | None] = [None] * len(audios)
        short = [i for i, a in enumerate(audios) if len(a) <= CHUNK_S * SAMPLE_RATE]
        bs = max(1, self.options.batch_size)
        with self._torch.inference_mode():
            for start in range(0, len(short), bs):
                idx = short[start : start + bs]
                features, mask = self._features([audios[i] for i in idx], long_form=False)
                tokens = self.model.generate(
                    features, attention_mask=mask, **self._generate_kwargs()
                )
                for i, seq in zip(idx, tokens, strict=True):
                    results[i] = self._decode(seq)
            for i in (i for i in range(len(audios)) if results[i] is None):
                results[i] = self._transcribe_long(audios[i])
        return [r for r in results if r is not None]

    def _transcribe_long(self, audio: np.ndarray) -> Transcription:
        features, mask = self._features([audio], long_form=True)
        kw = self._generate_kwargs() | {"return_timestamps": True, "return_segments": True}
        out = self.model.generate(features, attention_mask=mask, **kw)
        tok = self.processor.tokenizer
        text = tok.decode(out["sequences"][0], skip_special_tokens=True).strip()
        segments = [
            Segment(
                float(s["start"]),
                float(s["end"]),
                tok.decode(s["tokens"], skip_special_tokens=True).strip(),
            )
            for s in out["segments"][0]
        ]
        language = self.options.language if self.multilingual else "en"
        if not self.options.return_timestamps:
            segments = []
        return Transcription(text, language, segments)


class CTranslate2Engine(WhisperEngine):
    """faster-whisper on CTranslate2 weights (int8 on CPU, float16 on GPU).

    Clips up to 30 s are batched: their log-mel features are encoded together and decoded
    with one greedy ``generate`` call, which faster-whisper's own loop does one file at a time.
    Longer clips go through faster-whisper's sequential long-form transcription.
    """

    name = "ctranslate2"
    concurrent = True  # CTranslate2 runs calls from several threads on its replicas

    @staticmethod
    def default_device() -> str:
        # CTranslate2's own count: importing torch only to ask would add ~3 s to each actor.
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def __init__(self, *args, compute_type: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        device = "cuda" if self.device.startswith("cuda") else "cpu"
        self.compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        self.model = WhisperModel(
            str(self.model_path),
            device=device,
            compute_type=self.compute_type,
            cpu_threads=self.threads or os.cpu_count() or 1,
            num_workers=self.workers,
        )
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task=self.options.task,
            language=(self.options.language or "en") if multilingual else "en",
        )
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcription]:
        results: list[Transcription | None] = [None] * len(audios)
        short = [i for i, a in enumerate(audios) if len(a) <= CHUNK_S * SAMPLE_RATE]
        if self.options.pack and len(short) > 1:
            short = self._transcribe_packed(audios, short, results)
        bs = max(1, self.options.batch_size)
        for start in range(0, len(short), bs):
            idx = short[start : start + bs]
            tokens = self._generate([audios[i] for i in idx])
            for i, toks in zip(idx, tokens, strict=True):
                # Decoding stopped at a segment boundary before the audio ended: faster-whisper's
                # loop would go on from there, so this clip goes through that loop.
                if self._stopped_at(toks) < len(audios[i]) / SAMPLE_RATE:
                    continue
                results[i] = self._to_transcription(toks, self.options.return_timestamps)
        for i in (i for i in range(len(audios)) if results[i] is None):
            results[i] = self._transcribe_long(audios[i])
        return [r for r in results if r is not None]

    def _stopped_at(self, tokens: list[int]) -> float:
        """Seconds where decoding stopped early (two closing timestamps), else infinity."""
        begin = self.tokenizer.timestamp_begin
        if len(tokens) >= 2 and tokens[-1] >= begin and tokens[-2] >= begin:
            return (tokens[-1] - begin) * 0.02
        return float("inf")

    def _transcribe_packed(
        self, audios: list[np.ndarray], short: list[int], results: list
    ) -> list[int]:
        """Transcribe ``short`` clips packed into shared windows; returns those left to redo."""
        from .packing import attribute, doubtful, pack

        sr = SAMPLE_RATE
        windows = pack(
            [len(audios[i]) for i in short], int(PACK_WINDOW_S * sr), int(PACK_GAP_S * sr)
        )
        multi = [w for w in windows if len(w) > 1]
        redo = [short[w[0].index] for w in windows if len(w) == 1]
        arrays = []
        for w in multi:
            window = np.zeros(max(p.start + p.length for p in w), dtype=np.float32)
            for p in w:
                window[p.start : p.start + p.length] = audios[short[p.index]]
            arrays.append(window)
        bs = max(1, self.options.batch_size)
        tokens: list[list[int]] = []
        for start in range(0, len(arrays), bs):
            tokens += self._generate(arrays[start : start + bs])
        for w, toks in zip(multi, tokens, strict=True):
            out = self._to_transcription(toks, True)
            spans = [(p.start / sr, (p.start + p.length) / sr) for p in w]
            segs = [(s.start, s.end, s.text) for s in out.segments]
            owners = attribute(segs, spans)
            if owners is None:
                redo += [short[p.index] for p in w]
                continue
            stopped = self._stopped_at(toks)
            for p, (a, b), own in zip(w, spans, owners, strict=True):
                mine = [out.segments[k] for k in own]
                if doubtful([(s.start, s.end, s.text) for s in mine], (a, b), stopped):
                    redo.append(short[p.index])
                    continue
                results[short[p.index]] = Transcription(
                    " ".join(s.text for s in mine if s.text).strip(),
                    out.language,
                    [
                        Segment(max(0.0, s.start - a), min(b - a, max(0.0, s.end - a)), s.text)
                        for s in mine
                    ]
                    if self.options.return_timestamps
                    else [],
                )
        return sorted(redo)

    def _generate(self, audios: list[np.ndarray]) -> list[list[int]]:
        """Greedy (or beam) tokens, timestamps included, for clips of at most 30 s."""
        from faster_whisper.audio import pad_or_trim

        o = self.options
        fe = self.model.feature_extractor
        features = np.stack([pad_or_trim(fe(a)[..., :-1]) for a in audios])
        encoded = self.model.encode(features)
        prompt = self.model.get_prompt(self.tokenizer, [], without_timestamps=False)
        outputs = self.model.model.generate(
            encoded,
            [list(prompt) for _ in audios],
            beam_size=o.num_beams,
            max_length=min(self.model.max_length, len(prompt) + (o.max_new_tokens or 448)),
            suppress_blank=True,
            suppress_tokens=self.suppress,
            max_initial_timestamp_index=50,
        )
        return [list(out.sequences_ids[0]) for out in outputs]

    def _to_transcription(self, tokens: list[int], timestamps: bool) -> Transcription:
        tok = self.tokenizer
        begin = tok.timestamp_begin
        text = tok.decode([t for t in tokens if t < tok.eot]).strip()
        segments, current, start = [], [], 0.0
        for t in tokens:
            if t >= begin:
                stamp = (t - begin) * 0.02
                if current:
                    segments.append(Segment(start, stamp, tok.decode(current).strip()))
                    current = []
                start = stamp
            elif t < tok.eot:
                current.append(t)
        if current:  # no closing timestamp: the segment runs to the end
            segments.append(Segment(start, start, tok.decode(current).strip()))
        language = self.options.language if self.model.model.is_multilingual else "en"
        return Transcription(text, language, segments if timestamps else [])

    def _transcribe_long(self, audio: np.ndarray) -> Transcription:
        o = self.options
        multilingual = self.model.model.is_multilingual
        segments, info = self.model.transcribe(
            audio,
            beam_size=o.num_beams,
            language=o.language if multilingual else None,
            task=o.task,
            without_timestamps=not o.return_timestamps,
            condition_on_previous_text=True,
            vad_filter=False,
        )
        segs = [Segment(float(s.start), float(s.end), s.text.strip()) for s in segments]
        text = " ".join(s.text for s in segs if s.text).strip()
        return Transcription(text, info.language, segs if o.return_timestamps else [])


ENGINES = {"transformers": TransformersEngine, "ctranslate2": CTranslate2Engine}


def load_engine(
    engine: str,
    model_path: str,
    options: DecodingOptions,
    *,
    device: str | None = None,
    threads: int | None = None,
    revision: str | None = None,
    workers: int = 1,
) -> WhisperEngine:
    try:
        cls = ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}") from None
    if workers > 1 and not cls.concurrent:
        raise ValueError(f"engine {engine!r} runs one call at a time (workers must be 1)")
    return cls(
        model_path, options, device=device, threads=threads, revision=revision, workers=workers
    )
