"""The one-time CTranslate2 → transformers conversion of Whisper weights.

The transformers engine needs a Hugging Face model directory; the bundled tiny.en ships in
CTranslate2 format, so :func:`convert_ct2_whisper` writes one once under ``<home>/models/``.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np

CONVERTER_VERSION = "1"
# CTranslate2 DataType enum order (include/ctranslate2/types.h).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class ModelError(RuntimeError):
    """A model reference cannot be resolved or converted."""


def read_ct2_model(model_bin: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a CTranslate2 ``model.bin`` (binary format 6) into float32 arrays and aliases."""
    data = model_bin.read_bytes()
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = unpack("H")
        text = data[offset : offset + n - 1].decode("utf-8")
        offset += n
        return text

    version = unpack("I")
    if version != 6:
        raise ModelError(f"{model_bin}: CTranslate2 binary version {version}, expected 6")
    spec = string()
    unpack("I")  # spec revision
    if spec != "WhisperSpec":
        raise ModelError(f"{model_bin}: spec {spec!r} is not a Whisper model")
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = [unpack("I") for _ in range(unpack("B"))]
        dtype = _CT2_DTYPES[unpack("B")]
        nbytes = unpack("I")
        raw = np.frombuffer(
            data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset
        )
        offset += nbytes
        variables[name] = raw.reshape(shape) if shape else raw
    aliases = {string(): string() for _ in range(unpack("I"))}
    if any(name.endswith("weight_scale") for name in variables):
        raise ModelError(f"{model_bin} is quantized to int8; conversion needs float16/32 weights")
    return variables, aliases


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    # "encoder/layer_norm" also starts with "layer_": count numbered layers only.
    indices = {
        int(name.split("/")[1].removeprefix("layer_"))
        for name in variables
        if name.startswith(prefix + "/layer_")
        and name.split("/")[1].removeprefix("layer_").isdigit()
    }
    return len(indices)


def _state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    v = {k: np.asarray(a, dtype=np.float32) for k, a in variables.items() if a.ndim > 0}
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if f"{src}/bias" in v:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def split_qkv(dst: str, src: str, names: tuple[str, ...]) -> None:
        weights = np.split(v[f"{src}/weight"], len(names))
        biases = np.split(v[f"{src}/bias"], len(names))
        for name, w, b in zip(names, weights, biases, strict=True):
            sd[f"{dst}.{name}.weight"] = w
            if name == "k_proj":
                if np.any(b != 0):
                    raise ModelError(f"{src}: non-zero key bias cannot map to Whisper's k_proj")
            else:
                sd[f"{dst}.{name}.bias"] = b

    for side in ("encoder", "decoder"):
        m = f"model.{side}"
        sd[f"{m}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{m}.layer_norm", f"{side}/layer_norm")
        for i in range(_layer_count(variables, side)):
            src, dst = f"{side}/layer_{i}", f"{m}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split_qkv(
                f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj")
            )
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split_qkv(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return sd


def _build_tokenizer(ct2_dir: Path):
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = json.loads((ct2_dir / "tokenizer.json").read_text())
    vocab_lines = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]
    ]
    specials = sorted(spec["added_tokens"], key=lambda t: t["id"])
    tokenizer = WhisperTokenizer(
        vocab=spec["model"]["vocab"],
        merges=merges,
        additional_special_tokens=[t["content"] for t in specials if t["id"] != 50256],
        pad_token="<|endoftext|>",
        model_max_length=448,
    )
    last_special = specials[-1]["id"]
    timestamps = [t for t in vocab_lines[last_special + 1 :] if t]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    first_ts = tokenizer.convert_tokens_to_ids(timestamps[0])
    if first_ts != last_special + 1 or len(tokenizer) != len([t for t in vocab_lines if t]):
        raise ModelError(
            f"tokenizer rebuild mismatch: first timestamp id {first_ts}, size {len(tokenizer)}"
        )
    return tokenizer


def convert_ct2_whisper(ct2_dir: Path, out_dir: Path) -> Path:
    """Convert a float CTranslate2 Whisper model into a transformers model directory.

    Written to a temporary sibling and renamed, so an interrupted conversion leaves nothing behind.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    variables, aliases = read_ct2_model(ct2_dir / "model.bin")
    if aliases and aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise ModelError(f"unexpected aliases in {ct2_dir}: {aliases}")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    n_mels = variables["encoder/conv1/weight"].shape[1]
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    heads = int(np.asarray(variables["encoder/num_heads"]).reshape(-1)[0])
    multilingual = vocab_size >= 51865
    config = WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=heads,
        decoder_attention_heads=int(np.asarray(variables["decoder/num_heads"]).reshape(-1)[0]),
        encoder_ffn_dim=int(ffn),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=50256 if not multilingual else 50257,
        bos_token_id=50256 if not multilingual else 50257,
        eos_token_id=50256 if not multilingual else 50257,
        decoder_start_token_id=50257 if not multilingual else 50258,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, 50256]),
        suppress_tokens=ct2_config.get("suppress_ids", []),
        tie_word_embeddings=True,
    )
    if multilingual:
        raise ModelError(
            "only English-only CTranslate2 Whisper models are converted; "
            "use a transformers checkpoint for multilingual models"
        )
    model = WhisperForConditionalGeneration(config)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in _state_dict(variables).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ModelError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()

    tokenizer = _build_tokenizer(ct2_dir)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=int(n_mels)), tokenizer=tokenizer
    )
    generation = GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=50362,
        prev_sot_token_id=50360,
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        alignment_heads=ct2_config.get("alignment_heads", []),
        num_beams=1,
        do_sample=False,
    )
    model.generation_config = generation

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "conversion.json").write_text(
            json.dumps({"source": str(ct2_dir), "converter_version": CONVERTER_VERSION})
        )
        try:
            staging.rename(out_dir)
        except OSError:
            if not (out_dir / "conversion.json").is_file():  # lost a race to another converter
                raise
    return out_dir


def ensure_converted(ct2_dir: Path, out_dir: Path) -> Path:
    """Return ``out_dir``, converting ``ct2_dir`` into it the first time."""
    if (out_dir / "conversion.json").is_file():
        return out_dir
    return convert_ct2_whisper(ct2_dir, out_dir)
